"""The simulated fleet's helpers, shared by the e2e deploy tests (the fleet itself is the
session fixture `fleet` in conftest.py): commands run from the repository with their timing
printed, deploys through make and the fleet CLI, and the deployed servers' answers."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from PIL import Image

from ..conftest import REPO


def run_cmd(cmd, timeout=1200, **kwargs) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    print(f"$ {' '.join(map(str, cmd))}  ({time.monotonic() - started:.0f} s, rc {result.returncode})")
    return result


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


def deploy_summary(output: str) -> dict:
    path = re.search(r"^summary: (.+)$", output, re.M).group(1)
    return json.loads(Path(path).read_text())


def wait_ssh(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"sshd of a simulated device did not answer on 127.0.0.1:{port}")


def make_deploy(fleet, device: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cmd(["make", "--no-print-directory", "deploy", f"DEVICE={device}",
                    f"INVENTORY={fleet.inventory}", f"BUNDLES_DIR={fleet.bundles}",
                    f"DEPLOY_ARGS={' '.join(extra)}"])


def fleet_deploy(fleet, device: str, *extra: str, inventory: Path | None = None,
                 bundles: Path | None = None) -> subprocess.CompletedProcess:
    return run_cmd([sys.executable, "-m", "fleet", "deploy", "--device", device, "--inventory",
                    str(inventory or fleet.inventory), "--bundles", str(bundles or fleet.bundles),
                    *extra])


def generate(port: int, key: str = "") -> Image.Image:
    r = requests.post(f"http://127.0.0.1:{port}/v1/images/generations",
                      json={"model": "tiny-dcgan", "n": 1, "seed": 7}, timeout=120,
                      headers={"Authorization": f"Bearer {key}"} if key else {})
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))


def read_metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
