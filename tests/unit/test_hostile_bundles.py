"""Hostile bundles (issue 18, items 4, 7, 8): links and special files, shapes the graph does not
have, sizes and numbers no generator needs, names no label can carry. Each is a BundleError
with one clear line, before anything runs or hangs."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import pytest

from edge_app.state import of
from edge_app import create_app
from edge_app.bundle import BundleError, load_bundle, parse_manifest, write_bundle
from edge_app.config import load_config
from edge_app.runtime import ImageModel, load_model


def _raw(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


def _load_within(path: Path, seconds: float = 10) -> Exception | None:
    """load_bundle in a thread: a FIFO must not make it wait (the test must not hang)."""
    out: list = []

    def run():
        try:
            load_bundle(path)
            out.append(None)
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "load_bundle blocked"
    return out[0]


def test_symlinks_and_special_files_are_refused_without_blocking(bundle_copy, tmp_path):
    model = bundle_copy / "model.onnx"
    real = tmp_path / "elsewhere.onnx"
    model.rename(real)
    model.symlink_to(real)  # same bytes, same sha256: only the link is wrong
    err = _load_within(bundle_copy)
    assert isinstance(err, BundleError) and "'model.onnx' is a symbolic link" in str(err)

    model.unlink()
    os.mkfifo(model)  # no writer: opening it for reading would wait forever
    err = _load_within(bundle_copy)
    assert isinstance(err, BundleError) and "'model.onnx' is a FIFO" in str(err)

    model.unlink()
    real.rename(model)
    manifest = bundle_copy / "manifest.json"
    manifest.rename(tmp_path / "manifest.json")
    manifest.symlink_to(tmp_path / "manifest.json")
    err = _load_within(bundle_copy)
    assert isinstance(err, BundleError) and "is a symbolic link" in str(err)
    manifest.unlink()
    manifest.write_text(json.dumps({**_raw_of(tmp_path), "pad": "x" * (1 << 20)}))
    err = _load_within(bundle_copy)
    assert isinstance(err, BundleError) and "larger than 1048576 bytes" in str(err)


def _raw_of(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["generation"]["image"].update(value_range=[float("nan"), 1.0]),
     "both finite numbers"),
    (lambda d: d["generation"]["image"].update(value_range=[-1.0, float("inf")]),
     "both finite numbers"),
    (lambda d: d["generation"]["latent"].update(dim=20_000_000),
     "'generation.latent.dim' must be at most 65536, got 20000000"),
    (lambda d: d["generation"]["image"].update(height=5000),
     "'generation.image.height' must be at most 4096"),
    (lambda d: d.update(name="\ud800"), "'name' must be a non-empty word"),
    (lambda d: d.update(name="mod\u00e8le"), "'name' must be a non-empty word"),
    (lambda d: d.update(name="-dash-first"), "'name' must be a non-empty word"),
    (lambda d: d.update(name="x" * 129), "'name' must be a non-empty word"),
    (lambda d: d["files"].update({"a b": {"sha256": "0" * 64, "size": 1}}),
     "'files' may only list plain file names"),
])
def test_numbers_sizes_and_names_no_generator_needs_are_refused(dcgan_bundle, mutate, message):
    data = copy.deepcopy(_raw(dcgan_bundle))
    mutate(data)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(data)


def _rewritten(src: Path, dst: Path, files: dict | None = None, **changes) -> Path:
    """A valid bundle (checksums and all) whose manifest differs from `src`'s."""
    data = _raw(src)
    meta = {k: v for k, v in data.items() if k not in ("files", "schema_version")}
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = meta
        for key in parents:
            node = node[key] if not key.isdigit() else node[int(key)]
        node[last] = value
    return write_bundle(dst, meta, files or {f: src / f for f in data["files"]}).path


def test_a_shape_the_graph_does_not_have_is_refused_before_any_run(dcgan_bundle, tmp_path,
                                                                    monkeypatch):
    raw = _raw(dcgan_bundle)
    latent = raw["generation"]["latent_input"]
    inputs = [{**t, "shape": ["batch", 32]} if t["name"] == latent else t
              for t in raw["graph"]["inputs"]]
    path = _rewritten(dcgan_bundle, tmp_path / "b", graph__inputs=inputs,
                      generation__latent__dim=32)
    runs = []
    monkeypatch.setattr(ImageModel, "generate", lambda self, n, seed: runs.append(n))
    with pytest.raises(BundleError, match=rf"tensor '{latent}' has shape \['batch', 16\] in the "
                                          rf"model file, the manifest declares \['batch', 32\]"):
        load_model(load_bundle(path), load_config({}, environ={}))
    assert runs == []  # refused before the warm-up could allocate for the declared shape


def _failing_graph(path: Path) -> None:
    """A graph whose I/O matches its manifest but whose run fails: 16 latent values cannot be
    reshaped to (-1, 1, 3, 3)."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 1, 3, 3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["z", "shape"], ["image"])], "failing",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 3, 3])],
        [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_failing_warm_up_is_a_refused_and_counted_reload(dcgan_bundle, tmp_path):
    _failing_graph(tmp_path / "failing.onnx")
    graph = {"inputs": [{"name": "z", "dtype": "float32", "shape": ["batch", 16]}],
             "outputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 3, 3]}],
             "opset": 17}
    raw = _raw(dcgan_bundle)
    generation = {**raw["generation"], "latent_input": "z", "image_output": "image",
                  "image": {**raw["generation"]["image"], "height": 3, "width": 3}}
    _rewritten(dcgan_bundle, tmp_path / "root" / "failing", {"model.onnx": tmp_path /
                                                             "failing.onnx"},
               name="failing", graph=graph, generation=generation)
    app = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                      "bundle_root": str(tmp_path / "root")})
    client = app.test_client()
    r = client.post("/admin/reload", json={"bundles": ["failing"]})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_bundle"
    message = r.get_json()["error"]["message"]
    assert "the warm-up run failed" in message and "\n" not in message
    text = client.get("/metrics").get_data(as_text=True)
    assert 'edgegen_reloads_total{result="failure"} 1.0' in text
    assert sorted(of(app).models.models) == ["tiny-dcgan"]
