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

from edge_app.bundle import write_bundle

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


def serving(port: int) -> bool:
    """Whether a deployed server on this port answers /ready with 200."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).ok
    except requests.RequestException:
        return False


def table_rows(out: str, host: str) -> dict[str, str]:
    """A deploy table's result per host, for the hosts matching the regex `host`."""
    return dict(re.findall(rf"^({host})\s+(changed|ok|failed|unreachable|not run)\s", out, re.M))


def read_metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def rebundle(bundle: Path, out: Path, changes: dict, model: Path | None = None) -> Path:
    """A new release of `bundle` at `out`: its manifest with `changes`, its model file (or
    `model`), checksummed anew by write_bundle."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    kept = {k: v for k, v in manifest.items() if k not in ("files", "schema_version")}
    return write_bundle(out, {**kept, **changes}, {"model.onnx": model or bundle / "model.onnx"})


def cut_bundle(bundle: Path, out: Path) -> None:
    """A bundle that does not load, named after `out`: `bundle`'s model file cut in half at
    build time and a manifest made from it (its checksums hold: only loading it fails)."""
    model = (bundle / "model.onnx").read_bytes()
    cut = out.parent / f".{out.name}.onnx"
    cut.write_bytes(model[:len(model) // 2])
    rebundle(bundle, out, {"name": out.name}, cut)
    cut.unlink()
