"""Optimizer passes: one module each, registered by name, imported when first used (as in
Olive's pass table), so using one pass never imports another pass's dependencies.

Every pass module exposes the same four things:

    Config    a frozen dataclass: the pass's parameters in a recipe, unknown keys refused
    STAGE     "model" (transforms the PyTorch model) or "graph" (transforms the exported ONNX
              graph); in a chain every model pass comes before every graph pass, and the
              driver exports the model, validated, between the two
    FAMILIES  the model families it applies to (None: every family)
    run(subject, cfg, ctx) -> Subject     (families.base: Subject, Context)

and may define `check(cfg, family)` for family-dependent validation before any training, and
`params(cfg)` when the manifest should record other than the config's fields (what it reports
from `run` is recorded too).
A pass that needs family knowledge (which layers, how to fine-tune, how to build a student)
asks `ctx.family`; the family modules say what they support.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from ..errors import RecipeError

# name -> module (one file each), imported when a recipe names the pass
REGISTRY: dict[str, str] = {name: f"{__name__}.{name}" for name in (
    "prune_channels", "prune_magnitude", "prune_heads", "prune_mlp", "subpixel", "finetune",
    "qat", "distill", "quantize", "quantize_weights", "litert")}


def get_pass(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise RecipeError(f"unknown pass {name!r}; registered: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def make_config(name: str, params: dict[str, Any]):
    """The pass's typed config from recipe parameters; unknown keys are refused by name."""
    return build_config(name, get_pass(name).Config, params)


def build_config(name: str, config_cls: type, params: dict[str, Any]):
    """Construct pass `name`'s config dataclass, naming unknown keys and bad values."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RecipeError(f"pass {name!r}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    try:
        return config_cls(**params)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"pass {name!r}: {exc}") from None


def plan(chain: tuple[dict, ...], family, where: str) -> list[tuple[str, ModuleType, Any]]:
    """A point's chain as (name, module, config), checked before any training: registered
    passes, known parameters, passes that apply to the family, model passes first."""
    steps, graph_seen = [], None
    for i, step in enumerate(chain):
        name = step["pass"]
        module = get_pass(name)
        cfg = make_config(name, {k: v for k, v in step.items() if k != "pass"})
        if module.FAMILIES is not None and family.name not in module.FAMILIES:
            raise RecipeError(f"recipe: {where}.passes[{i}]: pass {name!r} applies to "
                              f"{list(module.FAMILIES)}, not to family {family.name!r}")
        if module.STAGE == "graph":
            graph_seen = name
        elif graph_seen:
            raise RecipeError(f"recipe: {where}.passes[{i}]: model pass {name!r} follows graph "
                              f"pass {graph_seen!r}; graph passes (on the exported ONNX) come last")
        if hasattr(module, "check"):
            module.check(cfg, family)
        steps.append((name, module, cfg))
    return steps


def apply(name: str, params: dict[str, Any], subject, family, workdir, data=None, recipe=None):
    """One pass outside a recipe (benchmarks, tools): its config from `params`, a bare context
    for `family` whose scratch files go under `workdir`."""
    from ..families import Context

    ctx = Context(recipe, family, data, seed=0, progress=False, workdir=workdir)
    return get_pass(name).run(subject, make_config(name, params), ctx)
