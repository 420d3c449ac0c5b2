"""Bundles as `make run` passes them, and hostile bundles at startup, on the real server (issue
18, items 3, 4, 7, 8): relative paths serve their files; links, FIFOs, absurd shapes and odd
names stop the boot with one line and exit 2, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from edge_app.bundle import write_bundle

from ..conftest import REPO, free_port
from ..integration.serverproc import Proc

pytestmark = pytest.mark.adversarial


def test_relative_bundle_paths_serve_their_files(dcgan_bundle, tmp_path):
    shutil.copytree(dcgan_bundle, tmp_path / "bundles" / "tiny-dcgan")
    port = free_port()
    # As `make run` does: a path relative to the working directory.
    server = Proc([sys.executable, "-m", "edge_app", "serve", "--bundle", "bundles/tiny-dcgan",
                   "--port", str(port)], cwd=tmp_path,
                  env={"EDGEGEN_POWER_BASELINE_S": "0", "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    try:
        assert server.wait_for("EdgeGen is serving", 120), server.output
        for name in ("manifest.json", "model.onnx"):
            r = requests.get(f"{base}/bundles/tiny-dcgan/{name}", timeout=10)
            assert r.status_code == 200, (name, r.text[:300])
            assert r.content == (dcgan_bundle / name).read_bytes()
        index = requests.get(base + "/bundles/index.json", timeout=10).json()
        assert index["bundles"][0]["name"] == "tiny-dcgan"
    finally:
        code, output = server.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def _boot(*bundles: Path, timeout: float = 60) -> tuple[int, list[str], float]:
    """Start the server on the bundles; (exit status, its last stderr lines, seconds)."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "edge_app", "serve", "--port", str(free_port()),
                          *(a for b in bundles for a in ("--bundle", str(b)))],
                         cwd=REPO, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "EDGEGEN_POWER_SENSOR": "none"})
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    return run.returncode, run.stderr.strip().splitlines(), time.monotonic() - started


def _variant(src: Path, dst: Path, **changes) -> Path:
    """A bundle with valid checksums whose manifest differs from `src`'s."""
    data = json.loads((src / "manifest.json").read_text())
    meta = {k: v for k, v in data.items() if k not in ("files", "schema_version")}
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
    return write_bundle(dst, meta, {f: src / f for f in data["files"]}).path


def test_links_and_fifos_stop_the_boot_with_one_line(dcgan_bundle, tmp_path):
    linked = Path(shutil.copytree(dcgan_bundle, tmp_path / "linked"))
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(dcgan_bundle / "model.onnx")  # same bytes
    code, lines, _ = _boot(linked)
    assert code == 2 and lines == [f"edgegen: error: bundle {linked}: file 'model.onnx' is a "
                                   f"symbolic link; a bundle holds regular files only"]
    fifo = Path(shutil.copytree(dcgan_bundle, tmp_path / "fifo"))
    (fifo / "model.onnx").unlink()
    os.mkfifo(fifo / "model.onnx")
    code, lines, seconds = _boot(fifo)
    assert code == 2 and len(lines) == 1 and "'model.onnx' is a FIFO" in lines[0]
    assert seconds < 30  # no hang on a FIFO nobody writes


def test_absurd_shapes_and_names_stop_the_boot_with_one_line(dcgan_bundle, tmp_path):
    raw = json.loads((dcgan_bundle / "manifest.json").read_text())
    latent = raw["generation"]["latent_input"]
    huge = json.loads((dcgan_bundle / "manifest.json").read_text())
    huge["generation"]["latent"]["dim"] = 20_000_000
    bad = Path(shutil.copytree(dcgan_bundle, tmp_path / "huge"))
    (bad / "manifest.json").write_text(json.dumps(huge))
    code, lines, _ = _boot(bad)
    assert code == 2 and len(lines) == 1
    assert "'generation.latent.dim' must be at most 65536, got 20000000" in lines[0]

    odd = json.loads((dcgan_bundle / "manifest.json").read_text())
    odd["name"] = "\ud800"
    named = Path(shutil.copytree(dcgan_bundle, tmp_path / "named"))
    (named / "manifest.json").write_text(json.dumps(odd))
    code, lines, _ = _boot(named)
    assert code == 2 and len(lines) == 1 and "'name' must be a non-empty word" in lines[0]

    # Within the bounds and consistent in itself, but not the graph's: only a worker (with
    # ONNX Runtime) can see it; the server still stops with that one line, exit 2.
    inputs = [{**t, "shape": ["batch", 32]} if t["name"] == latent else t
              for t in raw["graph"]["inputs"]]
    wrong = _variant(dcgan_bundle, tmp_path / "wrong", graph__inputs=inputs,
                     generation__latent__dim=32)
    code, lines, _ = _boot(wrong)
    assert code == 2, lines
    assert lines[-1] == (f"edgegen: error: bundle {wrong}: tensor '{latent}' has shape "
                         f"['batch', 16] in the model file, the manifest declares ['batch', 32]")
