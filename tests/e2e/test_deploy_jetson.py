"""Jetson rollouts on the simulated fleet (conftest.py's `fleet`, after test_deploy.py):

- the `jetson_nano` stand-in, whose image carries a real ONNX Runtime of an older era
  (simfleet.NANO_STAND_IN: 1.15.1), deploys and serves a bundle its runtime loads, and refuses
  one that is too new (a 4-bit bundle: opset 21) in one line naming both versions, before
  anything on the device changes;
- a release whose first start takes long (as a TensorRT engine build does: /health answers,
  /ready says "loading") is waited for within its class's readiness gate, not rolled back.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml

from edge_app import __version__

from .devices import deploy_summary, fleet_deploy, generate, ok, run_cmd
from .simfleet import NANO_RUNTIME

pytestmark = [pytest.mark.e2e, pytest.mark.docker_images("fleet")]
NANO_IMAGE = f"edgegen-edge:{__version__}-jetson_nano-amd64"
GOOD_JETSON = f"edgegen-edge:{__version__}-jetson-amd64"
SLOW_JETSON = f"edgegen-edge:{__version__}-slow-jetson-amd64"
LOAD_DELAY_S = 12  # the simulated engine build: longer than the liveness gate the test sets


@pytest.fixture(scope="module", autouse=True)
def _no_slow_image_left():
    yield
    subprocess.run(["docker", "rmi", SLOW_JETSON], capture_output=True)


def test_nano_stand_in_serves_on_its_older_runtime(fleet):
    out = ok(fleet_deploy(fleet, "jetson_nano", inventory=fleet.nano_inventory))
    (nano,) = deploy_summary(out)["hosts"]
    assert (nano["host"], nano["status"]) == ("nano-sim", "changed"), out[-4000:]
    assert "does not say which ONNX Runtime" not in out
    # The image says which runtime it carries (from its wheelhouse), and carries it.
    labels = json.loads(ok(run_cmd(["docker", "image", "inspect", "-f",
                                    "{{json .Config.Labels}}", NANO_IMAGE])))
    assert labels["io.edgegen.onnxruntime"] == NANO_RUNTIME
    inside = ok(run_cmd(["docker", "exec", "edgegen-edge-nano-sim", "python3", "-c",
                         "import onnxruntime; print(onnxruntime.__version__)"]))
    assert inside.strip() == NANO_RUNTIME.split()[1]
    # The bundle (opset 18, stamped IR 8 by the optimizer) loads and generates on it.
    manifest = json.loads((fleet.bundles / "tiny-dcgan/manifest.json").read_text())
    assert (manifest["graph"]["opset"], manifest["graph"]["ir_version"]) == (18, 8)
    generate(fleet.port["nano-sim"])
    model = requests.get(f"http://127.0.0.1:{fleet.port['nano-sim']}/v1/models",
                         timeout=30).json()["data"][0]
    assert list(model["placement"]) == ["CPUExecutionProvider"]


def test_a_bundle_too_new_for_the_class_runtime_is_refused(fleet, llama_run, tmp_path):
    int4 = next(b.path for b in llama_run[0].bundles if b.path.name.endswith("int4"))
    bundles = tmp_path / "bundles"
    shutil.copytree(fleet.bundles, bundles)
    shutil.copytree(int4, bundles / "tiny-llama-int4")
    inventory = yaml.safe_load(fleet.nano_inventory.read_text())
    inventory["all"]["children"]["jetson_nano"]["hosts"]["nano-sim"]["edgegen_bundles"] = [
        "tiny-dcgan", "tiny-llama-int4"]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    state = fleet.root / "nano-sim/opt/edgegen/state/current.json"
    before = state.read_text()
    result = fleet_deploy(fleet, "jetson_nano", inventory=path, bundles=bundles)
    assert result.returncode == 2, result.stdout[-3000:]
    assert result.stderr.strip() == (
        "fleet: error: class jetson_nano: bundle tiny-llama-int4 needs onnxruntime >= 1.18.0 "
        "(ONNX opset 21, IR 10); this class runs onnxruntime 1.15.1, which implements opsets up "
        "to 19 (IR 9): export it at opset 19 for this class (SET=export.opset=19)")
    # Nothing on the device changed: the same deployment serves.
    assert state.read_text() == before
    assert not list((fleet.root / "nano-sim/opt/edgegen/bundles").glob("tiny-llama*"))
    generate(fleet.port["nano-sim"])


def test_a_slow_first_start_is_waited_for_within_the_class_gate(fleet):
    # The Jetson stand-in's release, whose models take LOAD_DELAY_S longer to load: the server
    # answers /health at once and /ready says "loading" meanwhile, as during an engine build.
    ok(run_cmd([sys.executable, "-m", "fleet", "images", "--device", "jetson",
                "--inventory", str(fleet.inventory)]))
    delayed = ("import runpy, sys, time; import edge_app.runtime as r; load = r.load_model; "
               f"r.load_model = lambda *a, **k: (time.sleep({LOAD_DELAY_S}), load(*a, **k))[1]; "
               "sys.argv = ['edge_app', *sys.argv[1:]]; runpy.run_module('edge_app', "
               "run_name='__main__')")
    ok(run_cmd(["docker", "build", "--quiet", "-t", SLOW_JETSON, "-"],
               input=f"FROM {GOOD_JETSON}\nENTRYPOINT {json.dumps(['python3', '-c', delayed])}\n"
                     f'CMD ["serve"]\n'))
    started = time.monotonic()
    # A liveness gate of 5 s (which the first load outlasts); /ready has the class's own gate
    # (group_vars/jetson.yml: 240 polls 5 s apart).
    out = ok(fleet_deploy(fleet, "jetson", "--image", SLOW_JETSON,
                          "-e", "edgegen_health_retries=5", "-e", "edgegen_health_delay=1"))
    assert time.monotonic() - started > LOAD_DELAY_S
    assert re.search(r"^jetson-sim\s+changed\s", out, re.M), out[-4000:]
    # While it waited, the deploy showed the server's own progress line.
    assert re.search(r"jetson-sim\s+waiting\s+Wait until its models are loaded \(/ready\) "
                     r"\(\d+/\d+\): Loading models: 0 of 1 loaded; loading tiny-dcgan", out), \
        out[-4000:]
    assert "rolled back" not in out
    slow = ok(run_cmd(["docker", "image", "inspect", "-f", "{{.Id}}", SLOW_JETSON])).strip()
    running = ok(run_cmd(["docker", "inspect", "-f", "{{.Image}}", "edgegen-edge-jetson-sim"]))
    assert running.strip() == slow
    generate(fleet.port["jetson-sim"], fleet.key)
