"""LiteRT bundles (issue 22, items 1-2): a generator converted with litert-torch (FP32, FP16,
full-integer INT8), validated against PyTorch, bundled, and served through the same model
interface, metrics and API as its ONNX Runtime bundle; hostile and unservable LiteRT bundles
are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_app.bundle import BundleError, load_bundle, write_bundle
from edge_app.config import Config
from edge_app.latent import normal_latents
from edge_app.litert import LiteRTError, LiteRTSession, litert_version
from edge_app.runtime import load_model

from .. import litert_graphs
from ..conftest import REPO, free_port

pytestmark = pytest.mark.integration
LATENT = litert_graphs.LATENT


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A small random DCGAN generator (its BatchNorm statistics made non-trivial), as an ONNX
    bundle and as LiteRT FP32, FP16 and INT8 graphs from the optimizer's own code (converted
    in a process of their own: tests/litert_graphs.py)."""
    from optimizer.families.image import export_generator, image_manifest_sections
    from optimizer.graphs import graph_needs

    root = tmp_path_factory.mktemp("litert")
    litert_graphs.run("tiny", str(root))
    gen = litert_graphs.load_tiny(root)
    onnx_path = root / "model.onnx"
    export_generator(gen, onnx_path)
    graphs = {p: root / f"{p}.tflite" for p in ("fp32", "fp16", "int8")}

    def bundle(name: str, path: Path) -> Path:
        sections = image_manifest_sections(gen, graph_needs(path))
        tflite = path.suffix == ".tflite"
        manifest = {"name": name, "task": "image-generation", "family": "dcgan",
                    "precision": name.rsplit("-", 1)[-1] if tflite else "fp32",
                    "techniques": [], **sections, "metrics": {}, "provenance": {},
                    **({"model_file": "model.tflite"} if tflite else {})}
        return write_bundle(root / "bundles" / name, manifest,
                            {"model.tflite" if tflite else "model.onnx": path}).path

    bundles = {"ort": bundle("gen-ort", onnx_path),
               **{p: bundle(f"gen-litert-{p}", g) for p, g in graphs.items()}}
    return gen, graphs, bundles


def test_the_pass_validates_each_precision_against_pytorch(graphs):
    from optimizer.passes import litert

    gen, paths, _ = graphs
    z = normal_latents(5, 12, LATENT)
    fp32 = litert.validate(gen, paths["fp32"], z, litert.Config(precision="fp32"))
    fp16 = litert.validate(gen, paths["fp16"], z, litert.Config(precision="fp16"))
    int8 = litert.validate(gen, paths["int8"], z, litert.Config(precision="int8"))
    assert fp32["max_abs_diff"] <= 1e-4 and fp16["max_abs_diff"] <= 1e-2
    assert int8["psnr_db"] >= 20 and int8["max_abs_diff"] > fp32["max_abs_diff"]
    size = {p: paths[p].stat().st_size for p in paths}
    sub = paths["int8"].with_name("sub.tflite").stat().st_size  # the FP32 graph INT8 came from
    assert size["fp16"] < 0.6 * size["fp32"] and size["int8"] < 0.5 * sub
    with pytest.raises(litert.ExportError, match="under min_psnr_db 99"):
        litert.validate(gen, paths["int8"], z, litert.Config(precision="int8", min_psnr_db=99))
    with pytest.raises(litert.ExportError, match="exceeds atol 1e-09"):
        litert.validate(gen, paths["fp16"], z, litert.Config(precision="fp16", atol=1e-9))


def test_a_batch_runs_item_by_item_and_int8_edges_are_float(graphs):
    _, paths, _ = graphs
    z = normal_latents(9, 5, LATENT)
    for precision, path in paths.items():
        session = LiteRTSession(path)
        assert [(a.name, a.type, a.shape) for a in session.get_inputs()] == [
            ("z", "tensor(float)", ["batch", LATENT])], precision
        (batch,) = session.run(["image"], {"z": z})
        assert batch.shape == (5, 1, 32, 32) and batch.dtype == np.float32
        one = session.run(["image"], {"z": z[3:4]})[0]
        assert np.array_equal(batch[3:4], one), precision  # item by item, nothing shared
        assert session.run(None, {"z": z[:0]})[0].shape == (0, 1, 32, 32)
    int8 = LiteRTSession(paths["int8"])
    assert "XNNPACK" not in int8.placement()  # the delegate applies at the first run
    int8.run(["image"], {"z": z[:1]})
    assert set(int8.placement()) <= {"XNNPACK", "LiteRT CPU"} and int8.placement().get("XNNPACK")
    with pytest.raises(LiteRTError, match="do not match the graph's inputs"):
        int8.run(["image"], {"latent": z})


def test_seeded_images_match_the_onnx_bundle_and_serve_through_the_api(graphs):
    from edge_app import create_app

    _, _, bundles = graphs
    config = Config(bundles=tuple(str(p) for p in bundles.values()))
    models = {k: load_model(load_bundle(p), config) for k, p in bundles.items()}
    reference = models["ort"].generate(6, seed=42)
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 1e-2)):
        assert np.max(np.abs(models[precision].generate(6, seed=42) - reference)) <= tolerance
    mse = np.mean((models["int8"].generate(6, seed=42) - reference) ** 2)
    assert 10 * np.log10(4.0 / mse) >= 20  # PSNR against the FP32 ONNX bundle
    assert models["int8"].runtime == "LiteRT-XNNPACK" and models["int8"].placement

    client = create_app({"bundles": [str(p) for p in bundles.values()],
                         "max_images_per_request": 4}).test_client()
    listed = {m["id"]: m for m in client.get("/v1/models").get_json()["data"]}
    assert listed["gen-litert-int8"]["runtime"] == "LiteRT-XNNPACK"
    r = client.post("/v1/images/generations", json={"model": "gen-litert-int8", "n": 3,
                                                     "seed": 1})
    assert r.status_code == 200 and len(r.get_json()["data"]) == 3
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'model="gen-litert-int8"' in metrics and 'runtime="LiteRT-XNNPACK"' in metrics


def test_unservable_and_hostile_litert_bundles_are_refused_in_one_line(graphs, tmp_path):
    _, paths, bundles = graphs
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64 + b"TFL3" + bytes(range(256)) * 8)
    with pytest.raises(LiteRTError) as info:
        LiteRTSession(garbage)
    assert "\n" not in str(info.value)

    manifest = json.loads((bundles["int8"] / "manifest.json").read_text())
    manifest["graph"]["min_litert"] = "99.0.0"
    newer = write_bundle(tmp_path / "newer", {k: v for k, v in manifest.items() if k not in (
        "files", "schema_version")}, {"model.tflite": paths["int8"]}).path
    with pytest.raises(BundleError, match=rf"needs ai-edge-litert >= 99.0.0; this server runs "
                                          rf"{litert_version()}"):
        load_model(load_bundle(newer), Config())
    del manifest["graph"]["min_litert"]
    with pytest.raises(BundleError, match="a LiteRT graph needs 'graph.min_litert'"):
        write_bundle(tmp_path / "unversioned", {k: v for k, v in manifest.items() if k not in (
            "files", "schema_version")}, {"model.tflite": paths["int8"]})

    # A server whose image has no LiteRT: one line and exit 2 at boot, no traceback.
    result = subprocess.run([sys.executable, "-m", "edge_app", "serve", "--bundle",
                             str(bundles["int8"]), "--port", str(free_port())], cwd=REPO,
                            env=_without("ai_edge_litert", tmp_path), capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "has no LiteRT: install edgegen[litert]" in lines[-1]


def _without(package: str, tmp_path: Path) -> dict:
    """The environment of a server whose image lacks `package`: shadowed by one that cannot be
    imported."""
    shadow = tmp_path / f"no-{package}" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not in this image')\n")
    return {**os.environ, "PYTHONPATH": f"{shadow.parent}:{REPO}"}


def test_a_server_without_onnx_runtime_serves_litert_bundles_and_refuses_onnx_ones(graphs,
                                                                                   tmp_path):
    """The image of a class whose bundles are all LiteRT graphs has no ONNX Runtime
    (fleet/images.py): its server, two gunicorn workers, serves them all the same, and an ONNX
    bundle is refused at boot in one line."""
    import requests

    from .serverproc import ServerProcess

    _, _, bundles = graphs
    env = _without("onnxruntime", tmp_path)
    server = ServerProcess(bundles["int8"], bundles["fp32"],
                           env={"PYTHONPATH": env["PYTHONPATH"], "EDGEGEN_WORKERS": "2"})
    try:
        server.wait_ready()
        for model in ("gen-litert-int8", "gen-litert-fp32"):
            r = requests.post(f"{server.base}/v1/images/generations", timeout=60,
                              json={"model": model, "n": 2, "seed": 3})
            assert r.status_code == 200 and len(r.json()["data"]) == 2, r.text
        metrics = requests.get(f"{server.base}/metrics", timeout=30).text
        assert 'onnxruntime=""' in metrics and 'runtime="LiteRT-XNNPACK"' in metrics
    finally:
        code, out = server.stop()
    assert code == 0 and "Traceback" not in out, out[-3000:]
    result = subprocess.run([sys.executable, "-m", "edge_app", "serve", "--bundle",
                             str(bundles["ort"]), "--port", str(free_port())], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].endswith(
        "bundle gen-ort is an ONNX graph; this server has no ONNX Runtime (an image built for "
        "LiteRT bundles only): deploy the class with this bundle, whose image then carries it, "
        "or serve the model's LiteRT bundle")
