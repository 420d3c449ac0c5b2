"""The quick Llama-family recipe end to end through the real CLI: a grouped-query teacher trained
on pydoc text, distilled (and the labels-only control), weight-only INT8 and 4-bit; three seeds,
statistics, bundles the edge runtime decodes."""

from __future__ import annotations

import pytest

from edge_app.bundle import load_bundle
from edge_app.textgen import TextModel
from optimizer.families.llama import FAMILY as LLAMA
from optimizer.text.export import torch_greedy

from ..conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.trains]
# the `quick` fixture (tests/conftest.py) runs it once per session
RECIPE = REPO / "recipes" / "llama-pydoc-quick.yaml"
POINTS = ("student", "distilled", "int8", "int4", "distilled-int4")
INT4_PERPLEXITY_BOUND = 0.10  # the recipe's gate: 4-bit within 10% of FP32, every seed


def test_llama_quick_recipe_bundles_decode_alike_cached_and_as_pytorch(quick):
    tmp, _, _ = quick
    names = sorted(p.name for p in (tmp / "bundles").iterdir())
    assert names == sorted(["llama-pydoc"] + [f"llama-pydoc-{p}" for p in POINTS])
    teacher = LLAMA.load_checkpoint(tmp / "runs" / "llama-pydoc" / "seed0" / "baseline.pt")
    for name in names:
        bundle = load_bundle(tmp / "bundles" / name)
        model = TextModel.load(bundle)
        prompt = model.encode("The \"while\" statement is used for")
        greedy = model.generate(prompt, 24, stop_at_eos=False).tokens
        assert greedy == model.generate_uncached(prompt, 24), name  # every precision
        if name == "llama-pydoc":  # FP32: the graph's greedy tokens are PyTorch's
            assert greedy == torch_greedy(teacher, prompt, 24)
    precisions = {n: load_bundle(tmp / "bundles" / n).manifest.precision for n in names}
    assert precisions["llama-pydoc"] == "fp32" and precisions["llama-pydoc-int8"] == "int8"
    assert precisions["llama-pydoc-int4"] == precisions["llama-pydoc-distilled-int4"] == "int4"


def test_llama_int4_is_a_third_of_fp32_within_the_perplexity_bound(quick):
    _, results, _ = quick
    rows = {(r["point"], r["seed"]): r["metrics"] for r in results["rows"]}
    for seed in (0, 1, 2):
        for fp32, q in (("baseline", "int4"), ("baseline", "int8"),
                        ("distilled", "distilled-int4")):
            ratio = rows[(q, seed)]["perplexity"] / rows[(fp32, seed)]["perplexity"]
            assert ratio - 1 <= INT4_PERPLEXITY_BOUND, (seed, q, ratio)
        size = rows[("int4", seed)]["file_size_bytes"] / rows[("baseline", seed)]["file_size_bytes"]
        assert size <= 0.35, (seed, size)


def test_llama_distilled_student_beats_the_same_student_without_its_teacher(quick):
    _, results, _ = quick
    cmp = results["comparisons"]["distilled vs student"]["perplexity"]
    assert cmp["n"] == 3 and cmp["mean_diff"] < 0, cmp
    summary = results["summary"]
    assert summary["student"]["params"]["summary"]["mean"] < \
        summary["baseline"]["params"]["summary"]["mean"] / 3
