"""Everything registered is tested: a pass or family without a test fails here (optimum's
test_all_models_tested). A test covers pass `x` when its name starts with test_x, family
`y-z` when it starts with test_y_z; the suite is read as source, not imported."""

from __future__ import annotations

import ast

import pytest

from optimizer.families import FAMILIES, get_family
from optimizer.passes import REGISTRY, get_pass

from ..conftest import REPO


def _test_names() -> set[str]:
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.name.startswith("test_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("kind, registered", [("pass", sorted(REGISTRY)),
                                              ("family", sorted(FAMILIES))])
def test_every_registered_pass_and_family_has_a_test(kind, registered):
    tested = _test_names()
    missing = [name for name in registered
               if not any(t.startswith(f"test_{name.replace('-', '_')}_") for t in tested)]
    assert not missing, f"{kind}(s) without a test named test_<name>_...: {missing}"


def test_every_registered_pass_and_family_loads_and_declares_its_interface():
    for name in REGISTRY:
        module = get_pass(name)
        assert module.STAGE in ("model", "graph"), name
        assert module.FAMILIES is None or set(module.FAMILIES) <= set(FAMILIES), name
        assert callable(module.run) and hasattr(module, "Config"), name
    for name in FAMILIES:
        family = get_family(name)
        assert family.name == name and family.task in ("image-generation", "text-generation")
        assert family.spec.checks, name  # an export spec that validates something
