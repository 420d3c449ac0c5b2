"""The real server: gunicorn, threads, startup refusal of bad bundles."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from edge_app.bundle import sha256_file

from ..conftest import REPO
from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(dcgan_bundle):
    proc = ServerProcess(dcgan_bundle)
    proc.wait_ready()
    yield proc
    code, output = proc.stop()
    assert code == 0, output  # graceful SIGTERM


def _post(server, body):
    return requests.post(server.base + "/v1/images/generations", json=body, timeout=30)


def test_serves_deterministic_images_concurrently(server):
    seeds = [1, 2, 3, 1, 2, 3, 1, 2]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda s: _post(server, {"seed": s, "n": 2}), seeds))
    assert [r.status_code for r in responses] == [200] * 8
    by_seed: dict[int, set] = {}
    for seed, response in zip(seeds, responses):
        images = tuple(d["b64_json"] for d in response.json()["data"])
        by_seed.setdefault(seed, set()).add(images)
    assert all(len(v) == 1 for v in by_seed.values())  # same seed, same bytes, any thread
    assert len({next(iter(v)) for v in by_seed.values()}) == 3
    png = base64.b64decode(next(iter(by_seed[1]))[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_master_forks_its_workers_from_a_single_thread(server):
    # gunicorn's master (the process we started) forks each worker. It never loads ONNX Runtime
    # or numpy, whose imports start threads whose locks a fork would copy, held, into a worker.
    master = server.proc.pid
    status = Path(f"/proc/{master}/status").read_text()
    assert re.search(r"^Threads:\s+1$", status, re.M), status
    maps = Path(f"/proc/{master}/maps").read_text()
    assert "onnxruntime" not in maps and "numpy" not in maps
    (worker,) = (int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split())
    assert "onnxruntime" in Path(f"/proc/{worker}/maps").read_text()  # the models live there


def test_bad_input_over_http_is_json_4xx(server):
    response = requests.post(server.base + "/v1/images/generations", data=b"\xff\xfe{",
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["message"] == "request body must be a JSON object"
    assert _post(server, {"model": "nope"}).status_code == 404


def test_metrics_endpoint_over_http(server):
    _post(server, {"seed": 9})
    text = requests.get(server.base + "/metrics", timeout=10).text
    assert "# TYPE edgegen_request_duration_seconds histogram" in text
    assert 'edgegen_generated_images_total{model="tiny-dcgan"}' in text
    assert "edgegen_build_info{" in text


def _serve_once(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_app", "serve", *args, "--port", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_tampered_bundle_is_refused_at_startup(bundle_copy):
    model = bundle_copy / "model.onnx"
    recorded = sha256_file(model)
    data = bytearray(model.read_bytes())
    data[100] = (data[100] + 1) % 256
    model.write_bytes(bytes(data))
    result = _serve_once("--bundle", str(bundle_copy))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("edgegen: error: ") and "'model.onnx'" in lines[0]
    assert recorded in lines[0] and sha256_file(model) in lines[0]


@pytest.mark.parametrize("args, fragment", [
    ((), "no bundles configured"),
    (("--bundle", "/nonexistent/bundle"), "not a directory"),
])
def test_unusable_startup_is_one_line_and_nonzero(args, fragment):
    result = _serve_once(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert fragment in result.stderr


def test_unknown_execution_provider_stops_the_boot(dcgan_bundle):
    result = _serve_once("--bundle", str(dcgan_bundle),
                         env={"EDGEGEN_EXECUTION_PROVIDERS": "FastestExecutionProvider"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("edgegen: error: unknown execution provider(s) "
                           "['FastestExecutionProvider']; ONNX Runtime knows [")
    assert "'CPUExecutionProvider'" in line


def test_unknown_power_sensor_stops_the_boot(dcgan_bundle):
    result = _serve_once("--bundle", str(dcgan_bundle), env={"EDGEGEN_POWER_SENSOR": "ina999"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("edgegen: error: unknown power sensor 'ina999'; known: "
                                     "['android-battery', 'hwmon', 'jetson-ina3221-hwmon', "
                                     "'jetson-ina3221-iio', 'nvml', 'rapl', 'rpi5-pmic'] "
                                     "(or auto, none)")
