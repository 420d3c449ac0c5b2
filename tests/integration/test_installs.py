"""Each role installs its own extras, no more (issue 21): a server from `pip install -e .[serve]`
carries no torch, Ansible or test tools and still serves; the operator's `make status` and
`make targets` on a clean checkout create a venv with Ansible and no torch; a wheel of the
project carries the Ansible project inside fleet, so the operator's commands find it outside a
checkout. Real installs into fresh venvs (pip takes the pinned versions from constraints.txt;
its cache makes a rerun quick).
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


def _venv(path: Path, *install: str, timeout: float = 900) -> Path:
    """A fresh venv at `path` with `install` (pip arguments) installed at the pinned versions;
    its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"),
                           *install], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _checkout(dest: Path) -> Path:
    """The tracked files of this working tree (a clean checkout of what is being tested, edits
    included): no .venv, bundles or build outputs. Symlinks stay symlinks (fleet/_ansible)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / name)
        elif src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_the_serve_extra_is_a_torch_free_server_that_serves(tmp_path, dcgan_bundle):
    python = _venv(tmp_path / "venv", "-e", f"{REPO}[serve]")
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
    written = json.loads((repo / "build/monitoring/local/prometheus/targets/edge.json")
                         .read_text())
    assert [t["targets"] for t in written] == [[f"127.0.0.1:{port}"]]

    installed = _distributions(repo / ".venv" / "bin" / "python")
    assert {"ansible-core", "ansible-runner", "scipy"} <= installed
    assert not installed & {"torch", "transformers", "selenium", "schemathesis", "onnx"}, \
        sorted(installed & {"torch", "transformers", "selenium", "schemathesis", "onnx"})


# What the operator's commands read from the Ansible project: playbooks, roles, class settings,
# the example inventory.
SHIPPED = ("ansible.cfg", "deploy.yml", "bench.yml", "group_vars/all.yml", "group_vars/pi.yml",
           "group_vars/pixel.yml", "inventory/example.yml", "roles/edge_node/tasks/main.yml")
OUTSIDE = """
import json, sys
from pathlib import Path
import fleet
from fleet.inventory import ANSIBLE_DIR, device_class, load_inventory
from fleet.paths import REPO
example = ANSIBLE_DIR / "inventory" / "example.yml"
print(json.dumps({
    "fleet": fleet.__file__, "ansible_dir": str(ANSIBLE_DIR), "repo": str(REPO),
    "files": sorted(str(p.relative_to(ANSIBLE_DIR)) for p in ANSIBLE_DIR.rglob("*")
                    if p.is_file()),
    "devices": sorted(d.name for d in load_inventory(example)),
    "pixel": device_class("pixel")["edgegen_deploy"]}))
"""


def test_a_wheel_carries_the_ansible_project_for_use_outside_a_checkout(tmp_path):
    """`pip install edgegen[deploy]` from a wheel: fleet finds the playbooks, roles, group_vars
    and example inventory inside the package, run from a directory that is no checkout."""
    repo = _checkout(tmp_path / "edgegen")
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--disable-pip-version-check",
                            "--wheel-dir", str(wheels), str(repo)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("edgegen-*.whl")
    venv = tmp_path / "venv"
    # fleet's own imports (pyyaml, numpy through edge_app); Ansible is not needed to find files.
    python = _venv(venv, "pyyaml", "numpy", "--no-deps", str(wheel), timeout=600)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    probe = subprocess.run([str(python), "-c", OUTSIDE], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    site = venv / "lib"
    assert Path(found["fleet"]).is_relative_to(site), found["fleet"]
    assert Path(found["ansible_dir"]).is_relative_to(site), found["ansible_dir"]
    assert found["repo"] == str(elsewhere)  # build outputs go under the working directory
    # Every tracked file of ansible/ (its lint configs aside), and nothing else.
    tracked = [p.relative_to(repo / "ansible") for p in (repo / "ansible").rglob("*")
               if p.is_file()]
    assert found["files"] == sorted(str(p) for p in tracked if not p.name.startswith("."))
    assert set(SHIPPED) <= set(found["files"])
    assert found["devices"] == ["nano-01", "orin-nano-01", "pi-lab-01", "pi-lab-02",
                                "workstation"]
    assert found["pixel"] == "companion-apk"

    helped = subprocess.run([str(python), "-m", "fleet", "status", "--help"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--inventory" in helped.stdout, helped.stderr[-3000:]
    refused = subprocess.run([str(python), "-m", "fleet", "status"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "status needs an inventory" in refused.stderr
