"""Which runtime loads which bundle: the optimizer records a bundle's opset and the oldest ONNX
Runtime that loads it; the refusal a deploy prints; where a class's runtime version comes from.
The deploy itself refusing a bundle: tests/integration/test_runtime_check.py."""

from __future__ import annotations


import json
import shutil

import pytest

from edge_app.bundle import BundleError, load_bundle
from edge_app.runtime import open_session
from edge_app.compat import (CompatError, bundle_needs, litert_refusal, max_opset, min_onnxruntime,
                             parse_version, refusal)
from fleet.companion import ort_web_runtime
from fleet.images import wheel_runtime


@pytest.mark.parametrize("runtime, opset", [("1.11.0", 16), ("1.13.1", 17), ("1.14.0", 18),
                                            ("1.15.1", 19), ("1.23.0+cu126", 22),
                                            ("1.32.0", 24), ("0.5.0", 10)])
def test_max_opset_of_a_runtime(runtime, opset):
    assert max_opset(runtime) == opset


def test_min_runtime_of_a_graph():
    assert min_onnxruntime(16) == "1.11.0" and min_onnxruntime(18) == "1.14.0"
    assert min_onnxruntime(18, ir_version=8) == "1.14.0"
    assert min_onnxruntime(18, ir_version=10) == "1.18.0"  # torch's IR, as it writes it
    # MatMulNBits (4-bit weights) came after opset 16 did
    assert min_onnxruntime(16, {"MatMulNBits"}) == "1.17.0"
    assert min_onnxruntime(21, {"MatMulNBits", "SomethingElse"}) == "1.18.0"
    assert min_onnxruntime(23) == "1.24.0"  # an upper bound between two known releases
    with pytest.raises(CompatError, match="opset 25 is newer than any ONNX Runtime"):
        min_onnxruntime(25)
    with pytest.raises(CompatError):
        parse_version("latest")


def test_bundles_record_what_they_need(dcgan_bundle, llama_run):
    manifest = load_bundle(dcgan_bundle).manifest
    # opset 18 stamped IR 8 (the exporter wrote 10): loadable from ONNX Runtime 1.14
    assert (manifest.graph.opset, manifest.graph.ir_version,
            manifest.graph.min_onnxruntime) == (18, 8, "1.14.0")
    int4 = next(load_bundle(b.path).manifest for b in llama_run[0].bundles
                if b.path.name.endswith("int4"))
    assert (int4.graph.opset, int4.graph.ir_version, int4.graph.min_onnxruntime) == (
        21, 10, "1.18.0")
    # a bundle made before the field existed: derived from its opset
    old = manifest.graph.__class__(manifest.graph.inputs, manifest.graph.outputs, 18)
    assert bundle_needs(manifest.__class__(**{**manifest.__dict__, "graph": old})) == "1.14.0"


def test_refusal_names_both_versions_and_the_fix():
    why = refusal("dcgan-digits", 18, "1.14.0", "onnxruntime-gpu", "1.11.0", 8)
    assert why == ("bundle dcgan-digits needs onnxruntime-gpu >= 1.14.0 (ONNX opset 18, IR 8); "
                   "this class runs onnxruntime-gpu 1.11.0, which implements opsets up to 16 "
                   "(IR 8): export it at opset 16 for this class (SET=export.opset=16)")
    assert refusal("dcgan-digits", 18, "1.14.0", "onnxruntime", "1.14.0", 8) is None
    # an opset the runtime has, in a file format it cannot read (torch writes IR 10)
    assert "export it at opset 18" in refusal("x", 18, "1.18.0", "onnxruntime", "1.15.1", 10)
    # new enough an opset, but a contrib op the runtime lacks
    assert "update the runtime" in refusal("llama-int4", 16, "1.17.0", "onnxruntime", "1.16.3")


def test_the_server_says_which_runtime_a_bundle_needs(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["graph"]["min_onnxruntime"] = "99.0.0"
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"needs onnxruntime >= 99.0.0 \(ONNX opset 18, IR 8\); "
                                          r"this server runs onnxruntime 1\.\d+"):
        open_session(load_bundle(bundle_copy))


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


def test_litert_bundles_are_judged_by_the_litert_they_need(bundle_copy, dcgan_bundle, tmp_path):
    assert litert_refusal("gen-int8", "2.3.0", "2.3.0") is None
    assert litert_refusal("gen-int8", "2.3.0", "") == (
        "bundle gen-int8 is a LiteRT graph (ai-edge-litert >= 2.3.0); this class has no LiteRT: "
        "install edgegen[litert], or serve the model's ONNX bundle")
    assert "runs 1.4.0: update it" in litert_refusal("gen-int8", "2.3.0", "1.4.0")

    # A deploy checks them against the image's LiteRT label; the phone has none.
    from fleet.deploy import DeployError, _check_bundles, with_runtimes

    data = json.loads((bundle_copy / "manifest.json").read_text())
    data["graph"] = {**{k: data["graph"][k] for k in ("inputs", "outputs")},
                     "runtime": "litert", "min_litert": "2.3.0"}
    (bundle_copy / "model.onnx").rename(bundle_copy / "model.tflite")  # the checker reads JSON
    data["files"] = {"model.tflite": data["files"]["model.onnx"]}
    data["model_file"] = "model.tflite"
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    shutil.copytree(dcgan_bundle, tmp_path / "onnx-bundle")
    hosts = {"pi-1": {"edgegen_bundles": [bundle_copy.name]}}
    # LiteRT bundles only: the image has LiteRT and no ONNX Runtime; with an ONNX bundle (or
    # one that cannot be read) beside them, both; with none, as the class says
    only = with_runtimes(hosts, bundle_copy.parent)["pi-1"]
    assert (only["edgegen_litert"], only["edgegen_onnxruntime"]) == (True, False)
    for other in ("none", "onnx-bundle"):
        both = with_runtimes({"pi-1": {**hosts["pi-1"], "edgegen_candidate_bundles": [other]}},
                             bundle_copy.parent)["pi-1"]
        assert (both["edgegen_litert"], both["edgegen_onnxruntime"]) == (True, True)
    assert with_runtimes({"pi-1": {"edgegen_bundles": ["none"]}}, bundle_copy.parent) == \
        {"pi-1": {"edgegen_bundles": ["none"]}}
    _check_bundles("pi", hosts, bundle_copy.parent, print, "onnxruntime 1.20.0",
                   "ai-edge-litert 2.3.0")
    _check_bundles("pi", hosts, bundle_copy.parent, print, "", None)  # unknown: not checked
    with pytest.raises(DeployError, match="class pi has no LiteRT: rebuild its image"):
        _check_bundles("pi", hosts, bundle_copy.parent, print, "onnxruntime 1.20.0", "")
    # an ONNX bundle on an image built without ONNX Runtime (a deploy given --image/--archive)
    onnx = {"pi-1": {"edgegen_bundles": ["onnx-bundle"]}}
    with pytest.raises(DeployError, match="bundle onnx-bundle is an ONNX graph; class pi's image "
                                          "has no ONNX Runtime .*: let the deploy build"):
        _check_bundles("pi", onnx, bundle_copy.parent, print, "none", "ai-edge-litert 2.3.0")


def test_a_litert_manifest_names_its_runtime_and_needs_no_opset(manifest):
    from edge_app.schema import Obj, graph_spec

    graph = {"inputs": [{"name": "z", "dtype": "float32", "shape": ["batch", 8]}],
             "outputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 4, 4]}]}
    spec = graph_spec(Obj({**graph, "runtime": "litert", "min_litert": "2.3.0"}, "", "m.json"))
    assert (spec.runtime, spec.min_litert, spec.opset) == ("litert", "2.3.0", 0)
    with pytest.raises(BundleError, match="needs 'graph.min_litert'"):
        graph_spec(Obj({**graph, "runtime": "litert"}, "", "m.json"))
    with pytest.raises(BundleError, match="'graph.min_litert' must be a version"):
        graph_spec(Obj({**graph, "runtime": "litert", "min_litert": "new"}, "", "m.json"))
    with pytest.raises(BundleError, match="runtime"):
        graph_spec(Obj({**graph, "runtime": "tensorflow", "opset": 18}, "", "m.json"))
    assert manifest.graph.runtime == "onnxruntime"  # bundles before LiteRT: unchanged
