"""Readiness as state on the real server (issue 21): a worker answers from its start while its
models load: /health 200, /ready and every route that needs a model 503 "loading", never a closed
port; the startup hint once they are in; a reload meanwhile refused, then caught up with; two
workers each load on their own; a bundle failing in the background still stops the server in
one line, exit 2.

Loading is made to last by serving many bundles (renamed copies of the tiny DCGAN, each opened,
checked and warmed in ONNX Runtime), not by any hook in the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from edge_app.bundle import write_bundle

from ..conftest import REPO, free_port
from .serverproc import ServerProcess

pytestmark = pytest.mark.integration

N = 96  # bundles: their load lasts (tenths of a second here) well beyond a round of requests
ENV = {"EDGEGEN_POWER_SENSOR": "none", "EDGEGEN_INTRA_OP_THREADS": "1"}
HINT = "EdgeGen is serving"
LOADING_LOG = f"loading {N} model(s) from "


def _copies(src: Path, root: Path, n: int) -> list[Path]:
    """`n` bundles of `src`'s model under other names (two bundles may not share a name); the
    files are copied and their sha256 recorded, as an export writes them."""
    manifest = json.loads((src / "manifest.json").read_text())
    files = {f: src / f for f in manifest.pop("files")}
    manifest.pop("schema_version")
    return [write_bundle(root / f"copy-{i:02d}", {**manifest, "name": f"copy-{i:02d}"},
                         files).path for i in range(n)]


def _first_answer(server: ServerProcess, timeout: float = 120) -> requests.Response:
    """GET /ready from the moment the port accepts (the master binds it before any worker
    starts: the request waits in the backlog until a worker takes it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(server.base + "/ready", timeout=60)
        except requests.ConnectionError:
            assert server.proc.poll() is None and time.monotonic() < deadline, server.stop()[1]
            time.sleep(0.01)


def _printed(server: ServerProcess) -> str:
    server.wait_for("\0(collect what was printed so far)", 0)
    return server.output


def _wait_for(server: ServerProcess, text: str, timeout: float = 60) -> None:
    assert server.wait_for(text, timeout), f"no {text!r} in:\n{server.output[-5000:]}"


def _is_loading(response: requests.Response) -> bool:
    """503 "loading", with Retry-After and how far the load is."""
    if response.status_code != 503:
        return False
    error = response.json()["error"]
    return (error["code"] == "loading" and error["type"] == "unavailable_error"
            and re.fullmatch(rf"Loading models: \d+ of {N} loaded(; loading [\w.-]+)?",
                             error["message"]) is not None
            and int(response.headers["Retry-After"]) > 0)


def _post(server: ServerProcess, path: str, body: dict) -> requests.Response:
    return requests.post(server.base + path, json=body, timeout=30)


def test_a_loading_worker_answers_loading_and_its_hint_waits_for_the_models(dcgan_bundle,
                                                                            tmp_path):
    server = ServerProcess(*_copies(dcgan_bundle, tmp_path, N), env=ENV)
    try:
        first = _first_answer(server)
        assert HINT not in _printed(server)  # answered before the hint: the port is not closed
        assert _is_loading(first), (first.status_code, first.text)
        during = {
            "health": requests.get(server.base + "/health", timeout=30),
            "models": requests.get(server.base + "/v1/models", timeout=30),
            # bodies naming models not loaded yet (or never): "loading", not a 400 or 404
            "images": _post(server, "/v1/images/generations", {"model": "copy-00", "seed": 1}),
            "completions": _post(server, "/v1/completions", {"model": "tiny-gpt2", "prompt": "A"}),
            "chat": _post(server, "/v1/chat/completions", {
                "model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}]}),
            "metrics": requests.get(server.base + "/metrics", timeout=30),
        }
        after = requests.get(server.base + "/ready", timeout=30)
        # Still loading after the round: every answer above came while the models loaded.
        assert _is_loading(after), (after.status_code, after.text)
        assert during["health"].status_code == 200
        assert during["health"].json() == {"status": "ok", "models": "loading"}
        for name in ("models", "images", "completions", "chat"):
            assert _is_loading(during[name]), (name, during[name].status_code, during[name].text)
        assert during["metrics"].status_code == 200
        assert "edgegen_build_info{" in during["metrics"].text

        server.wait_ready()
        ready = requests.get(server.base + "/ready", timeout=30).json()
        assert ready["status"] == "ready" and len(ready["models"]) == N
        assert requests.get(server.base + "/health", timeout=30).json() == {"status": "ok"}
        images = _post(server, "/v1/images/generations", {"model": "copy-00", "seed": 1})
        assert images.status_code == 200, images.text
        unknown = _post(server, "/v1/completions", {"model": "tiny-gpt2", "prompt": "A"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        _wait_for(server, "# writes out.png")
        output = server.output
        assert output.index(LOADING_LOG) < output.index(f"loaded {N} model(s) in ") \
            < output.index(HINT)
    finally:
        code, output = server.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def test_a_reload_while_loading_is_refused_then_caught_up(dcgan_bundle, tmp_path):
    server = ServerProcess(*_copies(dcgan_bundle, tmp_path, N), env=ENV)
    try:
        first = _first_answer(server)
        assert _is_loading(first), (first.status_code, first.text)
        # Admin from loopback needs no key here; the worker refuses: nothing to fall back on yet.
        admin = _post(server, "/admin/reload", {})
        server.signal(signal.SIGHUP)
        assert admin.status_code == 409, admin.text
        error = admin.json()["error"]
        assert error["code"] == "conflict"
        assert re.fullmatch(rf"the models are still loading \(\d+ of {N} loaded\): reload once "
                            rf"/ready answers 200", error["message"]), error
        _wait_for(server, "reload on SIGHUP refused, still serving []: the models are still "
                          "loading (")
        server.wait_ready()
        # The hang-up asked for the configured set again: once loaded, the worker catches up
        # (every bundle unchanged, so none is loaded twice).
        _wait_for(server, "the bundle set changed while the models loaded: reloading")
        _wait_for(server, "(loaded [], unchanged ['copy-00'")
        assert requests.get(server.base + "/ready", timeout=30).status_code == 200
    finally:
        code, output = server.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def test_two_workers_each_load_their_models(dcgan_bundle, tmp_path):
    server = ServerProcess(*_copies(dcgan_bundle, tmp_path, N), env={**ENV,
                                                                      "EDGEGEN_WORKERS": "2"})
    try:
        first = _first_answer(server)
        assert _is_loading(first), (first.status_code, first.text)
        server.wait_ready()
        deadline = time.monotonic() + 60
        while len(set(re.findall(rf"\[(\d+)\] \[INFO\] loaded {N} model\(s\) in ",
                                 _printed(server)))) < 2:
            assert time.monotonic() < deadline, server.output[-5000:]
            time.sleep(0.1)
        assert len(set(re.findall(rf"\[(\d+)\] \[INFO\] {re.escape(LOADING_LOG)}",
                                  server.output))) == 2
        # Both loaded: fresh connections, spread over both workers, are all ready.
        assert {requests.get(server.base + "/ready", timeout=30).status_code
                for _ in range(16)} == {200}
        assert server.output.count(HINT) == 1  # the first worker's
    finally:
        code, output = server.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def test_a_bundle_failing_in_the_background_stops_the_server_in_one_line(dcgan_bundle,
                                                                         tmp_path):
    # Consistent in itself but not the graph's: only a worker (with ONNX Runtime) sees it, in
    # its background load, after eight good bundles; both workers load it.
    raw = json.loads((dcgan_bundle / "manifest.json").read_text())
    latent = raw["generation"]["latent_input"]
    files = {f: dcgan_bundle / f for f in raw.pop("files")}
    raw.pop("schema_version")
    dim = raw["generation"]["latent"]["dim"]
    raw["graph"]["inputs"] = [{**t, "shape": ["batch", 2 * dim]} if t["name"] == latent else t
                              for t in raw["graph"]["inputs"]]
    raw["generation"]["latent"]["dim"] = 2 * dim
    wrong = write_bundle(tmp_path / "wrong", raw, files).path
    bundles = [*_copies(dcgan_bundle, tmp_path, 8), wrong]
    run = subprocess.run([sys.executable, "-m", "edge_app", "serve", "--port", str(free_port()),
                          *(a for b in bundles for a in ("--bundle", str(b)))],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, **ENV, "EDGEGEN_WORKERS": "2",
                              "EDGEGEN_POWER_BASELINE_S": "0"})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    assert lines[-1] == (f"edgegen: error: bundle {wrong}: tensor '{latent}' has shape "
                         f"['batch', {dim}] in the model file, the manifest declares "
                         f"['batch', {2 * dim}]")
    assert sum(line.startswith("edgegen: error:") for line in lines) == 1
    assert "loading 9 model(s) from " in run.stderr and HINT not in run.stdout
