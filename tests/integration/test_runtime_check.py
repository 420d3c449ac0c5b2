"""A deploy refuses, per class, a bundle the class's runtime cannot load, in one line naming both
versions, before anything reaches a device; the optimizer exports at an older opset for such a
class (through the --set a user passes), and that bundle passes the same check."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest
import yaml

from edge_app.bundle import load_bundle
from fleet.__main__ import main
from fleet.deploy import _check_bundles

from ..conftest import TINY_RECIPE
from .test_preflight import _device

pytestmark = pytest.mark.integration


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
    # a device on this machine whose sudo needs no password: the sudo preflight passes
    device = {**_device(tmp_path, "nano-1", sudo="exit 0"), "edgegen_bundles": ["dcgan-digits"]}
    inventory.write_text(yaml.safe_dump({"all": {"children": {"jetson_nano": {
        "hosts": {"nano-1": device}}}}}))
    archive = _archive(tmp_path, "onnxruntime-gpu 1.11.0")
    rc = main(["deploy", "--device", "jetson_nano", "--inventory", str(inventory),
               "--archive", str(archive), "--bundles", str(bundles)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err == ("fleet: error: class jetson_nano: bundle dcgan-digits needs onnxruntime-gpu "
                   ">= 1.14.0 (ONNX opset 18, IR 8); this class runs onnxruntime-gpu 1.11.0, "
                   "which implements opsets up to 16 (IR 8): export it at opset 16 for this "
                   "class (SET=export.opset=16)")
    # -e edgegen_bundles wins over the inventory in Ansible, so the check reads it too (as
    # `make reproduce` deploys a table's bundles): the inventory's opset-16 bundle is not deployed
    device["edgegen_bundles"] = ["dcgan-digits-opset16"]
    inventory.write_text(yaml.safe_dump({"all": {"children": {"jetson_nano": {
        "hosts": {"nano-1": device}}}}}))
    rc = main(["deploy", "--device", "jetson_nano", "--inventory", str(inventory),
               "--archive", str(archive), "--bundles", str(bundles),
               "-e", 'edgegen_bundles=["dcgan-digits"]'])
    assert rc == 2 and capsys.readouterr().err.strip() == err
    # The bundle exported at opset 16 passes the same check (the rollout would go on).
    hosts = {"nano-1": {"edgegen_bundles": ["dcgan-digits-opset16"]}}
    log = io.StringIO()
    _check_bundles("jetson_nano", hosts, bundles, log.write, "onnxruntime-gpu 1.11.0")
    assert load_bundle(bundles / "dcgan-digits-opset16").manifest.graph.opset == 16
