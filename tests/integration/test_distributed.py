"""Training across processes with torchrun (PyTorch DDP, gloo on the CPU): a two-process run of
a recipe whose teacher and distilled student both train with DDP, checked rank against rank."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edge_app.bundle import load_bundle
from optimizer.distributed import digest
from optimizer.families.llama import FAMILY as LLAMA

from ..conftest import TINY_LLAMA_RECIPE

pytestmark = [pytest.mark.integration, pytest.mark.trains]


def test_llama_distillation_under_torchrun_ends_with_identical_replicas(tmp_path):
    recipe = yaml.safe_load(TINY_LLAMA_RECIPE.read_text())
    recipe["points"] = [{"name": "distilled", "passes": [
        {"pass": "distill", "student": {"num_hidden_layers": 1}, "alpha": 0.5}]}]
    recipe["gate"] = {"max_perplexity_increase_pct": 500}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "optimizer", "run", str(path), "--out", str(tmp_path / "bundles" / "tiny-llama"),
         "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=1200,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.count("bundle ") == 2  # rank 0 alone writes and reports
    teacher = load_bundle(tmp_path / "bundles" / "tiny-llama").manifest.techniques[0].params
    student = load_bundle(tmp_path / "bundles" / "tiny-llama-distilled").manifest.techniques[1]
    for trained in (teacher, student.params):
        assert trained["world_size"] == 2 and trained["engine"] == "torch.distributed DDP (gloo)"
        assert len(trained["replica_weights_sha256"]) == 64
    # the replicas' common hash is that of the teacher the run saved
    saved = LLAMA.load_checkpoint(tmp_path / "runs" / "tiny-llama" / "seed0" / "baseline.pt")
    assert digest(saved) == teacher["replica_weights_sha256"]
