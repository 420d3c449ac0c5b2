"""The quick GPT-2 recipe end to end through the real CLI: teacher trained on pydoc text, the
paper's ablation (distilled, INT8, distilled + INT8), the labels-only control, head pruning
and sparsity; seeds (two at the ci profile), statistics, bundles that the edge runtime
decodes."""

from __future__ import annotations

import pytest

from edge_app.bundle import load_bundle
from edge_app.textgen import Sampling, TextModel

from ..conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.trains]
# the `quick` fixture (tests/conftest.py) runs it once per session
RECIPE = REPO / "recipes" / "gpt2-pydoc-quick.yaml"
POINTS = ("student", "distilled", "int8", "distilled-int8", "heads-50", "sparse-50")


def test_every_point_becomes_a_bundle_the_runtime_decodes(quick):
    tmp, _, stdout = quick
    names = sorted(p.name for p in (tmp / "bundles").iterdir())
    assert names == sorted(["gpt2-pydoc"] + [f"gpt2-pydoc-{p}" for p in POINTS])
    for name in names:
        bundle = load_bundle(tmp / "bundles" / name)
        model = TextModel.load(bundle)
        prompt = model.encode("The \"while\" statement is used for")
        greedy = model.generate(prompt, 20, stop_at_eos=False).tokens
        assert greedy == model.generate_uncached(prompt, 20), name
        sampled = model.generate(prompt, 20, Sampling(temperature=0.8, top_k=40, seed=1))
        assert sampled.tokens == model.generate(prompt, 20, Sampling(temperature=0.8, top_k=40,
                                                                     seed=1)).tokens
        assert f"bundle {tmp / 'bundles' / name}:" in stdout
    int8 = load_bundle(tmp / "bundles" / "gpt2-pydoc-int8").manifest
    quant = next(t for t in int8.techniques if t.name == "quantize").params
    assert quant["ops_after"]["MatMulInteger"] >= 4 * 4 and quant["per_channel"] is False
    heads = load_bundle(tmp / "bundles" / "gpt2-pydoc-heads-50").manifest.generation
    assert sum(layer.heads for layer in heads.layers) == 8  # 16 heads, half removed


def test_distillation_beats_the_same_student_without_its_teacher(quick):
    """As written (4 epochs) the distilled student wins over 3 seeds. At the ci profile's 2
    epochs and 2 seeds the difference is within noise (the recipe's comment has the figures):
    the paired comparison is checked, not its sign; llama-pydoc-quick checks the same distill
    pass's effect at its ci size."""
    _, results, _ = quick
    cmp = results["comparisons"]["distilled vs student"]["perplexity"]
    assert cmp["n"] == len(results["method"]["seeds"]) >= 2, cmp
    low, high = cmp["ci95"]
    assert low <= cmp["mean_diff"] <= high and 0 <= cmp["p"] <= 1, cmp
    if results["method"].get("profile") != "ci":
        assert cmp["mean_diff"] < 0, cmp


def test_int8_perplexity_within_5_percent_of_fp32_for_every_seed(quick):
    _, results, _ = quick
    rows = {(r["point"], r["seed"]): r["metrics"] for r in results["rows"]}
    for seed in results["method"]["seeds"]:
        for fp32, int8 in (("baseline", "int8"), ("distilled", "distilled-int8")):
            ratio = rows[(int8, seed)]["perplexity"] / rows[(fp32, seed)]["perplexity"]
            assert abs(ratio - 1) < 0.05, (seed, fp32, ratio)
            assert rows[(int8, seed)]["file_size_bytes"] < rows[(fp32, seed)]["file_size_bytes"] / 2.5


def test_tables_mirror_the_papers_rows_with_statistics(quick):
    tmp, results, _ = quick
    md = (tmp / "runs" / "gpt2-pydoc" / "results.md").read_text()
    for title in ("Size and complexity (paper Table 2)", "Memory (paper Table 4)",
                  "Quality (paper Table 6)", "distilled vs student"):
        assert title in md
    summary = results["summary"]
    assert summary["baseline"]["perplexity"]["summary"]["n"] == len(results["method"]["seeds"])
    assert summary["sparse-50"]["nonzero_params"]["vs_baseline"]["relative_pct"] < -30
    student = summary["student"]["params"]["summary"]["mean"]
    assert student < summary["baseline"]["params"]["summary"]["mean"] / 3
    assert "ci95" in summary["int8"]["perplexity"]["vs_baseline"]
