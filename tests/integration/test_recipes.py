"""Recipes end to end through the real CLI: sweep, Beta-VAE, quality gate; bundles served."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from edge_app.bundle import load_bundle
from edge_app.stats import summarize

from ..conftest import REPO, TINY_RECIPE
from .serverproc import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.trains]


def _serves_every_bundle(bundles: list[Path]) -> None:
    server = ServerProcess(*bundles)
    server.wait_ready()
    try:
        listed = requests.get(server.base + "/v1/models", timeout=10).json()["data"]
        assert sorted(m["id"] for m in listed) == sorted(p.name for p in bundles)
        for bundle in bundles:
            r = requests.post(server.base + "/v1/images/generations",
                              json={"model": bundle.name, "seed": 3, "n": 2}, timeout=30)
            assert r.status_code == 200, r.text
            assert base64.b64decode(r.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
    finally:
        assert server.stop()[0] == 0


def _tables_trace_to_rows(results: Path) -> dict:
    data = json.loads(results.read_text())
    for point, metrics in data["summary"].items():
        for metric, entry in metrics.items():
            raw = [r["metrics"][metric] for r in data["rows"] if r["point"] == point]
            assert entry["summary"] == pytest.approx(summarize(raw)), (point, metric)
    return data


def test_quick_image_sweep(recipe_runs, fid_extractors):
    # Once per session (tests/artifacts.py): its own directory, as tmp_path was.
    result = recipe_runs.run(REPO / "recipes" / "dcgan-digits-sweep-quick.yaml", fid_extractors)
    tmp_path = result.dir
    assert result.returncode == 0, result.stderr[-3000:]
    bundles = sorted((tmp_path / "bundles").iterdir())
    names = [p.name for p in bundles]
    assert names == sorted(["dcgan-digits-sweep"] + [f"dcgan-digits-sweep-{p}" for p in (
        "prune25", "prune50", "sparse50", "int8", "qat-int8", "fp16", "prune50-int8", "litert",
        "litert-int8")])
    manifests = {p.name.removeprefix("dcgan-digits-sweep").lstrip("-") or "baseline":
                 load_bundle(p).manifest for p in bundles}
    assert manifests["int8"].precision == "int8" and manifests["fp16"].precision == "fp16"
    quant = manifests["int8"].techniques[1].params
    assert quant["graph"] in ("subpixel", "convtranspose") and "timing_ms" in quant
    assert len(quant["calibration"]["sha256"]) == 64
    assert manifests["baseline"].metrics["fid_extractor"]["name"] == "rotation-cnn"
    assert manifests["prune50"].metrics["params"] < 0.45 * manifests["baseline"].metrics["params"]
    assert [t.name for t in manifests["qat-int8"].techniques] == [
        "train", "qat", "quantize", "export"]
    assert manifests["qat-int8"].techniques[2].params["graph"] == "subpixel"
    assert [t.name for t in manifests["prune50-int8"].techniques] == [
        "train", "prune_channels", "finetune", "quantize", "export"]

    _litert_bundles_match_their_onnx_reference(bundles, manifests)

    data = _tables_trace_to_rows(tmp_path / "runs" / "dcgan-digits-sweep" / "results.json")
    assert sorted({r["seed"] for r in data["rows"]}) == [0, 1, 2]
    assert {"int8", "qat-int8"} <= set(data["summary"])  # PTQ and QAT in the same table
    fid = data["summary"]["prune50"]["fid"]["vs_baseline"]
    assert fid["n"] == 3 and len(fid["ci95"]) == 2 and 0 <= fid["p"] <= 1
    md = (tmp_path / "runs" / "dcgan-digits-sweep" / "results.md").read_text()
    assert "| prune50 |" in md and "Memory (paper Table 4)" in md
    assert list((tmp_path / "mlruns").glob("*/*/metrics/prune50.fid"))  # tracked in MLflow
    _serves_every_bundle(bundles)


def _litert_bundles_match_their_onnx_reference(bundles: list[Path], manifests: dict) -> None:
    """The LiteRT points: .tflite graphs run by LiteRT, validated against PyTorch at export, and
    the FP32 one draws the baseline ONNX bundle's seeded images (the same model) within 1e-4."""
    from edge_app.config import Config
    from edge_app.runtime import load_model

    for point, precision in (("litert", "fp32"), ("litert-int8", "int8")):
        m = manifests[point]
        assert (m.graph.runtime, m.model_file, m.precision) == ("litert", "model.tflite",
                                                                precision)
        assert [t.name for t in m.techniques] == ["train", "litert", "export"]
        assert m.techniques[2].params["format"] == "tflite" and m.metrics["quality"]["fid"] > 0
    assert manifests["litert-int8"].techniques[1].params["graph"] == "subpixel"
    assert "timings" in manifests["litert"].techniques[1].params
    by_name = {p.name.removeprefix("dcgan-digits-sweep").lstrip("-") or "baseline": p
               for p in bundles}
    models = {k: load_model(load_bundle(by_name[k]), Config(), placement=False)
              for k in ("baseline", "litert")}
    onnx, tflite = (models[k].generate(8, seed=11) for k in ("baseline", "litert"))
    assert np.max(np.abs(onnx - tflite)) <= 1e-4


def test_beta_vae_recipe_reports_ssim_and_serves_the_decoder(recipe_runs, fid_extractors):
    result = recipe_runs.run(REPO / "recipes" / "beta-vae-digits-quick.yaml", fid_extractors)
    tmp_path = result.dir
    assert result.returncode == 0, result.stderr[-3000:]
    bundles = sorted((tmp_path / "bundles").iterdir())
    assert [p.name for p in bundles] == ["beta-vae-digits", "beta-vae-digits-int8",
                                         "beta-vae-digits-prune50"]
    base = load_bundle(bundles[0]).manifest
    assert base.family == "beta-vae" and 0 < base.metrics["quality"]["ssim"] <= 1
    data = _tables_trace_to_rows(tmp_path / "runs" / "beta-vae-digits" / "results.json")
    assert data["summary"]["int8"]["ssim"]["summary"]["n"] == 3
    _serves_every_bundle(bundles)


def test_quality_gate_fails_an_over_pruned_model(tmp_path, recipe_runs, fid_extractors):
    recipe = tmp_path / "overpruned.yaml"
    recipe.write_text(TINY_RECIPE.read_text() + """points:
  - name: prune90
    passes:
      - {pass: prune_channels, ratio: 0.9}
gate:
  max_fid_increase: 0.5
""")
    result = recipe_runs.run(recipe, fid_extractors)
    tmp_path = result.dir
    assert result.returncode == 1
    assert "quality gate failed, no bundle for:" in result.stderr
    assert "prune90 (seed 0): FID" in result.stderr and "(max increase 0.5)" in result.stderr
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["tiny-dcgan"]
    rows = json.loads((tmp_path / "runs" / "tiny-dcgan" / "results.json").read_text())["rows"]
    assert rows[1]["point"] == "prune90" and rows[1]["gate"] != "pass"
