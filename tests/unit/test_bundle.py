"""The bundle contract: schema validation, checksums, atomic writes."""

from __future__ import annotations

import copy
import json

import pytest

from edge_app.bundle import BundleError, load_bundle, parse_manifest, sha256_file, write_bundle


def _raw(bundle_dir):
    return json.loads((bundle_dir / "manifest.json").read_text())


def test_optimizer_bundle_is_valid_and_self_describing(dcgan_bundle, manifest):
    assert manifest.schema_version == 1
    assert manifest.task == "image-generation" and manifest.family == "dcgan"
    assert manifest.generation.image.height == 32 and manifest.generation.latent.dim == 16
    assert manifest.files["model.onnx"].sha256 == sha256_file(dcgan_bundle / "model.onnx")
    assert manifest.files["model.onnx"].size == (dcgan_bundle / "model.onnx").stat().st_size
    assert manifest.provenance["seed"] == 0
    assert manifest.provenance["dataset"]["name"] == "digits"
    assert manifest.provenance["versions"]["torch"].startswith("2.13.0")
    assert [t.name for t in manifest.techniques] == ["train", "export"]
    assert manifest.metrics["params"] > 0 and manifest.metrics["flops_per_image"] > 0


def test_one_flipped_byte_is_refused_naming_file_and_both_checksums(bundle_copy):
    model = bundle_copy / "model.onnx"
    expected = sha256_file(model)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    message = str(err.value)
    assert "'model.onnx'" in message
    assert expected in message and sha256_file(model) in message


def test_missing_and_resized_files_are_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"'model.onnx' has size \d+, manifest says \d+"):
        load_bundle(bundle_copy)
    model.unlink()
    with pytest.raises(BundleError, match="'model.onnx' listed in the manifest is missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unknown_schema_version_is_refused(dcgan_bundle, version):
    data = _raw(dcgan_bundle)
    data["schema_version"] = version
    with pytest.raises(BundleError, match=f"unsupported schema_version {version}; .* reads "
                                          f"schema_version 1 only"):
        parse_manifest(data)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("task"), "missing required field 'task'"),
    (lambda d: d.update(task="video"), r"field 'task' must be one of \['image-generation', "),
    (lambda d: d.update(family=3), "field 'family' must be a string, got an integer"),
    (lambda d: d["graph"]["inputs"][0].update(dtype="float64"),
     r"field 'graph.inputs\[0\].dtype' must be one of"),
    (lambda d: d["graph"]["outputs"][0].update(shape=["batch", 1, 0, 32]),
     r"'graph.outputs\[0\].shape\[2\]' must be a positive integer"),
    (lambda d: d["generation"]["latent"].update(dim=True),
     "field 'generation.latent.dim' must be an integer, got a boolean"),
    (lambda d: d["generation"]["latent"].update(rng="mt19937"),
     "field 'generation.latent.rng' must be one of"),
    (lambda d: d["generation"]["image"].update(value_range=[1, -1]),
     r"'generation.image.value_range' must be \[low, high\]"),
    (lambda d: d["generation"].update(image_output="nope"),
     "'generation.image_output' names 'nope', which is not in graph"),
    (lambda d: d["generation"]["image"].update(height=64),
     r"has shape \['batch', 1, 32, 32\], but generation declares \[batch, 1, 64, 32\]"),
    (lambda d: d["files"].update({"../escape": {"sha256": "0" * 64, "size": 1}}),
     "'files' may only list plain file names"),
    (lambda d: d["files"]["model.onnx"].update(sha256="ABC"), "must be 64 lowercase hex"),
    (lambda d: d.update(model_file="other.onnx"), "model_file 'other.onnx' is not listed"),
    (lambda d: d.update(task="text-generation"), "missing required field 'generation.kv_cache'"),
    (lambda d: d.update(name="a/b"), "'name' must be a non-empty word"),
])
def test_malformed_manifest_gets_a_precise_message(dcgan_bundle, mutate, message):
    data = copy.deepcopy(_raw(dcgan_bundle))
    mutate(data)
    with pytest.raises(BundleError, match=message):
        parse_manifest(data)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_write_bundle_replaces_atomically_and_refuses_invalid(dcgan_bundle, tmp_path):
    data = _raw(dcgan_bundle)
    meta = {k: v for k, v in data.items() if k not in ("files", "schema_version")}
    out = tmp_path / "copy"
    first = write_bundle(out, meta, {"model.onnx": dcgan_bundle / "model.onnx"})
    assert first.manifest == load_bundle(dcgan_bundle).manifest
    # an invalid manifest leaves the existing bundle untouched and no staging directory behind
    with pytest.raises(BundleError, match="field 'precision' must be one of"):
        write_bundle(out, {**meta, "precision": "int3"}, {"model.onnx": dcgan_bundle / "model.onnx"})
    assert load_bundle(out).manifest == first.manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
