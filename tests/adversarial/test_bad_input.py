"""Bad input against the real server, text and image models behind an API key (issue 18,
items 6, 9, 10): huge prompts cost nothing outside admission, invalid Unicode and deep JSON
are 4xx JSON on every POST route, wrong keys are braked, the startup hint works as printed,
and a public 404 reveals no path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from ..integration.serverproc import ServerProcess

pytestmark = pytest.mark.adversarial
KEY = "sk-input-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
POSTS = ("/v1/completions", "/v1/chat/completions", "/v1/images/generations", "/admin/reload")


@pytest.fixture(scope="module")
def server(gpt2_bundle, dcgan_bundle, tmp_path_factory):
    ort = tmp_path_factory.mktemp("opt-edgegen-install") / "onnxruntime-web"
    proc = ServerProcess(gpt2_bundle, dcgan_bundle, env={
        "EDGEGEN_POWER_SENSOR": "none", "EDGEGEN_API_KEYS": KEY,
        "EDGEGEN_COMPANION_ORT_DIR": str(ort)})
    proc.wait_ready()
    for end_of_hint in ("# writes out.png", '"max_tokens": 32}'):  # the whole startup hint
        assert proc.wait_for(end_of_hint, 30), proc.output
    yield proc
    code, output = proc.stop()
    assert code == 0 and "Traceback" not in output and "unhandled error" not in output, \
        output[-3000:]


def _rss_mb(server) -> float:
    master = server.proc.pid
    (worker,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    status = Path(f"/proc/{worker}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def test_sixteen_huge_prompts_cost_no_memory_and_stall_nothing(server):
    cjk = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(99_000))
    before = _rss_mb(server)
    statuses: list[int] = []
    health: list[float] = []
    done = threading.Event()

    def attack():
        r = requests.post(server.base + "/v1/completions", headers=AUTH, timeout=60,
                          json={"model": "tiny-gpt2", "prompt": cjk, "max_tokens": 4})
        statuses.append(r.status_code)

    def probe():
        while not done.is_set():
            started = time.monotonic()
            requests.get(server.base + "/health", timeout=10)
            health.append(time.monotonic() - started)
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    attackers = [threading.Thread(target=attack) for _ in range(16)]
    for t in attackers:
        t.start()
    started = time.monotonic()
    image = requests.post(server.base + "/v1/images/generations", headers=AUTH, timeout=30,
                          json={"model": "tiny-dcgan", "seed": 3})
    image_s = time.monotonic() - started
    for t in attackers:
        t.join(60)
    done.set()
    prober.join(10)
    assert statuses == [400] * 16
    assert image.status_code == 200 and image_s < 1.0
    assert health and max(health) < 1.0, health
    assert _rss_mb(server) - before < 30, (before, _rss_mb(server))


def test_invalid_unicode_and_deep_json_are_4xx_json_on_every_post_route(server):
    """What a schema cannot express, so the schemathesis run (tests/integration/
    test_openapi_fuzz.py) never sends it: on every POST route of the OpenAPI document."""
    doc = requests.get(server.base + "/openapi.json", timeout=10).json()
    routes = sorted(path for path, item in doc["paths"].items() if "post" in item)
    assert set(POSTS) <= set(routes)
    bodies = {
        "lone surrogate": b'{"prompt": "\\ud800", "model": "tiny-gpt2"}',
        "lone surrogate in a list": b'{"prompt": ["\\udc00abc"]}',
        "lone surrogate in a message": b'{"messages": [{"role": "user", "content": '
                                       b'[{"type": "text", "text": "a\\udbffb"}]}]}',
        "100k deep": b"[" * 100_000 + b"]" * 100_000,
        "100k deep in a field": b'{"prompt": ' + b"{" * 50_000 + b"}" * 50_000 + b"}",
    }
    for route in routes:
        for what, body in bodies.items():
            r = requests.post(server.base + route, data=body, timeout=30,
                              headers={**AUTH, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (route, what, r.status_code, r.text[:300])
            assert r.headers["Content-Type"] == "application/json", (route, what)
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_startup_hint_works_as_printed(server, tmp_path):
    lines = [ln.strip() for ln in server.output.splitlines()]
    (text,) = [ln for ln in lines if ln.startswith("curl") and "/v1/completions" in ln]
    assert '-H "Authorization: Bearer $EDGEGEN_KEY"' in text
    run = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "EDGEGEN_KEY": KEY}, cwd=tmp_path)
    assert run.returncode == 0 and json.loads(run.stdout)["choices"][0]["text"] is not None, \
        run.stdout[:500]
    at = next(i for i, ln in enumerate(lines) if "/v1/images/generations" in ln)
    image = " ".join(ln.rstrip("\\") for ln in lines[at:at + 2]).split("   #")[0]
    run = subprocess.run(["bash", "-c", image], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "EDGEGEN_KEY": KEY}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_missing_companion_asset_does_not_reveal_the_install_path(server):
    r = requests.get(server.base + "/companion/ort-wasm-simd-threaded.wasm", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    assert "opt-edgegen-install" not in r.text and "/tmp" not in r.text


def test_wrong_keys_are_braked_then_counted(server):
    """Last in this module: it leaves 127.0.0.1 braked for a minute."""
    wrong = {"Authorization": "Bearer sk-guess-0123456789abcdef0"}
    statuses = [requests.get(server.base + "/v1/models", headers=wrong, timeout=10).status_code
                for _ in range(12)]
    assert statuses == [401] * 10 + [429] * 2  # auth_failures_per_minute: 10 by default
    braked = requests.get(server.base + "/v1/models", headers=AUTH, timeout=10)
    assert braked.status_code == 429 and 50 <= int(braked.headers["Retry-After"]) <= 60
    text = requests.get(server.base + "/metrics", timeout=10).text
    assert 'edgegen_requests_rejected_total{reason="auth_throttled"} 3.0' in text
