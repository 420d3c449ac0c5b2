"""Each role installs its own extras, no more (issue 21): a server from `pip install -e .[serve]`
carries no torch, Ansible or test tools and still serves; the operator's `make status` and
`make targets` on a clean checkout create a venv with Ansible and no torch. Real installs into
fresh venvs (pip takes the pinned versions from constraints.txt; its cache makes a rerun quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ..conftest import REPO, free_port
from .serverproc import Proc

pytestmark = pytest.mark.integration

NEVER_ON_A_SERVER = {"torch", "ansible", "ansible-core", "ansible-runner", "selenium",
                     "schemathesis", "mlflow-skinny", "transformers", "pytest", "matplotlib"}


def _distributions(python: Path) -> set[str]:
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json",
                             "--disable-pip-version-check"], capture_output=True, text=True,
                            check=True).stdout
    return {d["name"].lower().replace("_", "-") for d in json.loads(listed)}


def _checkout(dest: Path) -> Path:
    """The tracked files of this working tree (a clean checkout of what is being tested, edits
    included): no .venv, bundles or build outputs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_the_serve_extra_is_a_torch_free_server_that_serves(tmp_path, dcgan_bundle):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"),
                              "-e", f"{REPO}[serve]"], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = _distributions(python)
    assert {"onnxruntime", "flask", "gunicorn", "edgegen"} <= installed
    assert not installed & NEVER_ON_A_SERVER, sorted(installed & NEVER_ON_A_SERVER)

    port = free_port()
    server = Proc([str(python), "-m", "edge_app", "serve", "--bundle", str(dcgan_bundle),
                   "--port", str(port)])
    try:
        assert server.wait_for("EdgeGen is serving", timeout=120), server.stop()[1][-3000:]
        image = requests.post(f"http://127.0.0.1:{port}/v1/images/generations",
                              json={"n": 1, "seed": 1}, timeout=30)
        assert image.status_code == 200, image.text
    finally:
        server.stop()


def test_operator_commands_on_a_clean_checkout_install_no_torch(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = _checkout(tmp_path / "edgegen")
    inventory = tmp_path / "fleet.yml"
    port = free_port()  # nothing listens: the device is reported down
    inventory.write_text(f"all:\n  children:\n    local:\n      hosts:\n        bench-1:\n"
                         f"          ansible_host: 127.0.0.1\n          edgegen_port: {port}\n")
    env = {**os.environ, "MAKEFLAGS": ""}
    status = subprocess.run(["make", "--no-print-directory", "status", f"INVENTORY={inventory}"],
                            cwd=repo, capture_output=True, text=True, timeout=1200, env=env)
    assert "bench-1" in status.stdout, status.stdout[-3000:] + status.stderr[-3000:]
    targets = subprocess.run(["make", "--no-print-directory", "targets",
                              f"INVENTORY={inventory}"], cwd=repo, capture_output=True,
                             text=True, timeout=300, env=env)
    assert targets.returncode == 0, targets.stderr[-3000:]
    written = json.loads((repo / "monitoring/prometheus/targets/edge.json").read_text())
    assert [t["targets"] for t in written] == [[f"127.0.0.1:{port}"]]

    installed = _distributions(repo / ".venv" / "bin" / "python")
    assert {"ansible-core", "ansible-runner", "scipy"} <= installed
    assert not installed & {"torch", "transformers", "selenium", "schemathesis", "onnx"}, \
        sorted(installed & {"torch", "transformers", "selenium", "schemathesis", "onnx"})
