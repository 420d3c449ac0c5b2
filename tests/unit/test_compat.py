"""Which runtime loads which bundle: the optimizer records a bundle's opset and the oldest ONNX
Runtime that loads it; a deploy refuses, per class, a bundle its runtime cannot load (in one
line naming both versions), before anything is built on or sent to a device; the optimizer
exports at an older opset for such a class."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest

from edge_app.bundle import load_bundle
from edge_app.compat import (CompatError, bundle_needs, max_opset, min_onnxruntime,
                             parse_version, refusal)
from fleet.__main__ import main
from fleet.companion import ort_web_runtime
from fleet.deploy import _check_bundles
from fleet.images import wheel_runtime

from ..conftest import TINY_RECIPE


@pytest.fixture(scope="module")
def opset16_bundle(tmp_path_factory):
    """The tiny DCGAN recipe exported for a runtime of the Jetson Nano's era (ONNX Runtime 1.11:
    opset 16), through the same --set a user passes."""
    from optimizer.recipe import load_recipe
    from optimizer.run import run_recipe

    root = tmp_path_factory.mktemp("opset16")
    result = run_recipe(load_recipe(TINY_RECIPE, overrides=("export.opset=16",)), TINY_RECIPE,
                        root / "tiny-dcgan-opset16", root / "runs", progress=False)
    (bundle,) = result.bundles
    return bundle.path


@pytest.mark.parametrize("runtime, opset", [("1.11.0", 16), ("1.13.1", 17), ("1.14.0", 18),
                                            ("1.23.0+cu126", 21), ("1.32.0", 24),
                                            ("0.5.0", 10)])
def test_max_opset_of_a_runtime(runtime, opset):
    assert max_opset(runtime) == opset


def test_min_runtime_of_a_graph():
    assert min_onnxruntime(16) == "1.11.0" and min_onnxruntime(18) == "1.14.0"
    # MatMulNBits (4-bit weights) came after opset 16 did
    assert min_onnxruntime(16, {"MatMulNBits"}) == "1.17.0"
    assert min_onnxruntime(21, {"MatMulNBits", "SomethingElse"}) == "1.20.0"
    assert min_onnxruntime(22) == "1.24.0"  # an upper bound between two known releases
    with pytest.raises(CompatError, match="opset 25 is newer than any ONNX Runtime"):
        min_onnxruntime(25)
    with pytest.raises(CompatError):
        parse_version("latest")


def test_bundles_record_what_they_need(dcgan_bundle, llama_run):
    manifest = load_bundle(dcgan_bundle).manifest
    assert (manifest.graph.opset, manifest.graph.min_onnxruntime) == (18, "1.14.0")
    int4 = next(load_bundle(b.path).manifest for b in llama_run[0].bundles
                if b.path.name.endswith("int4"))
    assert (int4.graph.opset, int4.graph.min_onnxruntime) == (21, "1.20.0")
    # a bundle made before the field existed: derived from its opset
    old = manifest.graph.__class__(manifest.graph.inputs, manifest.graph.outputs, 18)
    assert bundle_needs(manifest.__class__(**{**manifest.__dict__, "graph": old})) == "1.14.0"


def test_refusal_names_both_versions_and_the_fix():
    why = refusal("dcgan-digits", 18, "1.14.0", "onnxruntime-gpu", "1.11.0")
    assert why == ("bundle dcgan-digits needs onnxruntime-gpu >= 1.14.0 (ONNX opset 18); this "
                   "class runs onnxruntime-gpu 1.11.0, which implements opsets up to 16: export "
                   "it at opset 16 for this class (SET=export.opset=16)")
    assert refusal("dcgan-digits", 18, "1.14.0", "onnxruntime", "1.14.0") is None
    # new enough an opset, but a contrib op the runtime lacks
    assert "update the runtime" in refusal("llama-int4", 16, "1.17.0", "onnxruntime", "1.16.3")


def _archive(tmp_path, runtime: str):
    """A saved image archive as `fleet images` leaves it: the file and its sidecar."""
    path = tmp_path / "edgegen-edge_0.1.0-jetson_nano-arm64.tar.gz"
    path.write_bytes(b"not an image: the deploy stops before loading it")
    path.with_name(path.name + ".json").write_text(json.dumps({
        "tag": "edgegen-edge:0.1.0-jetson_nano-arm64", "image_id": "sha256:" + "0" * 64,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "image_bytes": 1,
        "archive_bytes": path.stat().st_size, "runtime": runtime}))
    return path


def test_deploy_refuses_a_bundle_the_class_runtime_cannot_load(tmp_path, dcgan_bundle,
                                                               opset16_bundle, capsys):
    bundles = tmp_path / "bundles"
    shutil.copytree(dcgan_bundle, bundles / "dcgan-digits")
    shutil.copytree(opset16_bundle, bundles / "dcgan-digits-opset16")
    inventory = tmp_path / "fleet.yml"
    inventory.write_text("all:\n  children:\n    jetson_nano:\n      hosts:\n        nano-1:\n"
                         "          ansible_host: 127.0.0.1\n"
                         "          edgegen_bundles: [dcgan-digits]\n")
    archive = _archive(tmp_path, "onnxruntime-gpu 1.11.0")
    rc = main(["deploy", "--device", "jetson_nano", "--inventory", str(inventory),
               "--archive", str(archive), "--bundles", str(bundles)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err == ("fleet: error: class jetson_nano: bundle dcgan-digits needs onnxruntime-gpu "
                   ">= 1.14.0 (ONNX opset 18); this class runs onnxruntime-gpu 1.11.0, which "
                   "implements opsets up to 16: export it at opset 16 for this class "
                   "(SET=export.opset=16)")
    # The bundle exported at opset 16 passes the same check (the rollout would go on).
    hosts = {"nano-1": {"edgegen_bundles": ["dcgan-digits-opset16"]}}
    log = io.StringIO()
    _check_bundles("jetson_nano", hosts, bundles, log.write, "onnxruntime-gpu 1.11.0")
    assert load_bundle(bundles / "dcgan-digits-opset16").manifest.graph.opset == 16


def test_class_runtimes_come_from_what_the_image_and_the_phone_carry(tmp_path):
    for name in ("onnxruntime_gpu-1.23.0-cp310-cp310-linux_aarch64.whl",
                 "onnxruntime_gpu-1.22.0-cp311-cp311-linux_aarch64.whl",
                 "onnx-1.19.0-cp310-cp310-manylinux_2_17_aarch64.whl",
                 "numpy-2.2.6-cp310-cp310-manylinux_2_17_aarch64.whl"):
        (tmp_path / name).write_bytes(b"")
    assert wheel_runtime(tmp_path, "onnxruntime-gpu") == "onnxruntime-gpu 1.22.0"
    assert wheel_runtime(tmp_path, "onnxruntime") == ""
    package, version = ort_web_runtime().split(" ")
    assert package == "onnxruntime-web" and max_opset(version) >= 18
