"""`make run` end to end: trains and bundles once, serves, and reuses the bundle next time."""

from __future__ import annotations

import shutil

import pytest
import requests

from ..conftest import TINY_RECIPE, free_port
from .serverproc import Proc

pytestmark = pytest.mark.integration


def _make_run(bundle, port) -> Proc:
    """Start `make run` and read its output until it has announced the URLs."""
    proc = Proc(["make", "--no-print-directory", "run", f"RECIPE={TINY_RECIPE}",
                 f"BUNDLE={bundle}", f"PORT={port}"], env={"MAKEFLAGS": ""})
    if not proc.wait_for("# writes out.png", timeout=300):
        pytest.fail(f"make run did not come up:\n{proc.stop()[1]}")
    return proc


def test_make_run_builds_once_then_reuses(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    bundle, port = tmp_path / "bundle", free_port()

    proc = _make_run(bundle, port)
    try:
        assert "python -m optimizer run" in proc.output  # trained and bundled
        assert "train dcgan" in proc.output  # with a progress bar
        assert f"http://127.0.0.1:{port}/v1/models" in proc.output and "curl -s" in proc.output
        response = requests.post(f"http://127.0.0.1:{port}/v1/images/generations",
                                 json={"seed": 1}, timeout=30)
        assert response.status_code == 200 and response.json()["model"] == "tiny-dcgan"
    finally:
        _, first = proc.stop()
    # make itself dies of the SIGTERM sent to the group; gunicorn below it shuts down cleanly
    assert "Shutting down: Master" in first, first
    built = (bundle / "manifest.json").stat().st_mtime_ns

    _, second = _make_run(bundle, port).stop()
    assert "python -m optimizer run" not in second  # reused, not retrained
    assert (bundle / "manifest.json").stat().st_mtime_ns == built
