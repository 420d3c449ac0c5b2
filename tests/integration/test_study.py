"""The study's cells and `make reproduce`: the paper recipes' CI profiles run on data laid out
exactly as the real datasets are (tests/datasets.py writes CIFAR-10 batches and a CelebA folder
from bundled photos, OpenWebText and WikiText-2 from CPython's reference text, and a tiny random
GPT-2 checkpoint), from a working directory holding `data/` and `models/` where the recipes look
for them; without their data the paper profiles stop in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.recipe import load_recipe

from ..conftest import REPO
from ..datasets import (write_celeba, write_cifar10, write_gpt2_checkpoint, write_openwebtext,
                        write_wikitext2)

pytestmark = pytest.mark.trains

# the cells the study had no recipe for before, and the cross-corpus text cell
NEW_CELLS = ("dcgan-celeba-paper", "beta-vae-cifar10-paper", "gpt2-openwebtext-paper")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A user's working directory: data/ and models/ as the paper recipes name them."""
    root = tmp_path_factory.mktemp("study")
    write_cifar10(root / "data" / "cifar-10-batches-py", per_batch=60)  # 300 train, 60 test
    write_celeba(root / "data" / "img_align_celeba", 200)
    write_openwebtext(root / "data" / "openwebtext", part=0)
    write_wikitext2(root / "data" / "wikitext-2-raw", part=1)  # the other half: disjoint text
    write_gpt2_checkpoint(root / "models" / "gpt2")
    return root


def _env() -> dict:
    # the recipes name a local checkpoint, models/gpt2, which also reads as a Hub id: offline,
    # a miss never leaves the machine
    return {**os.environ, "HF_HUB_OFFLINE": "1", "EDGEGEN_PROFILE": "ci",
            "MLFLOW_TRACKING_URI": ""}


def _run(argv: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *argv], cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=timeout)
    print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
    return result


def test_paper_profiles_without_their_data_fail_in_one_line(tmp_path):
    """Each new cell as written (its paper profile), from a directory without its files."""
    for stem in NEW_CELLS:
        result = _run(["-m", "optimizer", "run", str(REPO / "recipes" / f"{stem}.yaml"),
                       "--profile", "", "--no-progress"], tmp_path, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr, stem
        (line,) = result.stderr.strip().splitlines()
        expected = {"dcgan-celeba-paper": "optimizer: error: celeba root data/img_align_celeba",
                    "beta-vae-cifar10-paper": "optimizer: error: cifar10 root "
                                              "data/cifar-10-batches-py is not a directory",
                    "gpt2-openwebtext-paper": "optimizer: error: checkpoint 'models/gpt2' not "
                                              "found: tried no local directory"}[stem]
        assert line.startswith(expected), line


@pytest.mark.parametrize("stem", ["dcgan-celeba-paper", "beta-vae-cifar10-paper"])
def test_image_cells_run_their_ci_profile_on_the_datasets_layout(study_dir, tmp_path, stem):
    recipe = load_recipe(REPO / "recipes" / f"{stem}.yaml", "ci")
    result = _run(["-m", "optimizer", "run", str(REPO / "recipes" / f"{stem}.yaml"),
                   "--out", str(tmp_path / "bundles" / recipe.name), "--runs-dir",
                   str(tmp_path / "runs"), "--no-progress"], study_dir)
    assert result.returncode == 0, result.stderr
    names = [recipe.name] + [f"{recipe.name}-{p.name}" for p in recipe.points]
    for name in names:
        manifest = json.loads((tmp_path / "bundles" / name / "manifest.json").read_text())
        provenance = manifest["provenance"]
        assert provenance["dataset"]["name"] == recipe.data.dataset
        assert provenance["recipe"]["profile"] == "ci"
    table = (tmp_path / "runs" / recipe.name / "results.md").read_text()
    assert all(p.name in table for p in recipe.points) and "profile" in table


def test_reproduce_cross_corpus_table_end_to_end_and_resumes(study_dir, tmp_path):
    """`make reproduce TABLE=gpt2-cross-corpus PROFILE=ci`: GPT-2 fine-tuned on OpenWebText,
    perplexity on WikiText-2; measured here, reported; a second run redoes nothing."""
    out = tmp_path / "results"
    argv = ["-m", "fleet", "reproduce", "gpt2-cross-corpus", "--profile", "ci", "--out",
            str(out), "--bundles", str(tmp_path / "bundles"), "--runs-dir",
            str(tmp_path / "runs"), "--bench-arg=--repeats=2", "--bench-arg=--runs=2",
            "--bench-arg=--warmup=1", "--bench-arg=--window=0", "--bench-arg=--baseline=0",
            "--bench-arg=--new-tokens=8"]
    first = _run(argv, study_dir, timeout=1200)
    assert first.returncode == 0, first.stderr

    manifest = json.loads((tmp_path / "bundles" / "gpt2-openwebtext-distilled" /
                           "manifest.json").read_text())
    quality, method = manifest["metrics"]["quality"], manifest["metrics"]["quality_method"]
    assert method["dataset"].startswith("wikitext2 test split (")
    assert method["dataset_in_domain"].startswith("openwebtext test split (")
    # disjoint text, the model's own tokenizer: two different perplexities, both finite
    assert quality["perplexity"] > 1 and quality["perplexity_in_domain"] > 1
    assert quality["perplexity"] != quality["perplexity_in_domain"]
    table = (tmp_path / "runs" / "gpt2-openwebtext" / "results.md").read_text()
    assert "PPL (train corpus)" in table

    table_dir = out / "gpt2-cross-corpus"
    state = json.loads((table_dir / "state.json").read_text())["steps"]
    assert state["optimize gpt2-openwebtext-paper"]["bundles"] == [
        "gpt2-openwebtext", "gpt2-openwebtext-distilled", "gpt2-openwebtext-distilled-int8"]
    repeats = sorted(p.relative_to(table_dir / "bench").as_posix()
                     for p in (table_dir / "bench").rglob("repeat-*.json"))
    assert len(repeats) == 3 * 2 and all(r.startswith("local/gpt2-openwebtext") for r in repeats)
    report = (table_dir / "report" / "report.md").read_text()
    assert "gpt2-openwebtext-distilled-int8" in report
    samples = json.loads((table_dir / "report" / "report.json").read_text())["samples"]
    assert {s["bundle"] for s in samples if s.get("completions")} == {
        "gpt2-openwebtext", "gpt2-openwebtext-distilled", "gpt2-openwebtext-distilled-int8"}
    readme = (table_dir / "README.md").read_text()
    assert "optimize gpt2-openwebtext-paper" in readme and "report.html" in readme

    second = _run(argv, study_dir, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "[optimize gpt2-openwebtext-paper] done earlier" in second.stdout
    assert "[bench local] done earlier" in second.stdout
    assert "python -m optimizer run" not in second.stdout
    assert "python -m edge_app bench" not in second.stdout


def test_reproduce_names_the_tables_and_stops_in_one_line(tmp_path):
    result = _run(["-m", "fleet", "reproduce", "table-9", "--out", str(tmp_path)], tmp_path,
                  timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fleet: error: no table 'table-9'; the study's tables: dcgan "
                           "(dcgan-cifar10-paper, dcgan-celeba-paper)")
    # a fleet class needs its inventory, before any recipe runs
    result = _run(["-m", "fleet", "reproduce", "quick", "--device", "pi", "--out",
                   str(tmp_path)], tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "fleet: error: DEVICE=pi measures the devices of an inventory: pass INVENTORY=FILE (or "
        "DEVICE=local)"]
    assert not (tmp_path / "quick").exists()
