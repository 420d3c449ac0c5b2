"""Signals on the real gunicorn server: SIGTERM lets in-flight streams finish and exits 0;
SIGHUP reloads the bundles from the config file, refusing a tampered one."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from .serverproc import ServerProcess

pytestmark = pytest.mark.integration


def _stream(base: str, out: dict) -> None:
    """One streamed completion; records when its first event arrived and every event."""
    body = {"model": "tiny-gpt2", "prompt": "The", "max_tokens": 100, "temperature": 0,
            "stream": True}
    events = []
    with requests.post(base + "/v1/completions", json=body, stream=True, timeout=120) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            if line:
                out.setdefault("first_at", time.monotonic())
                events.append(line.decode())
    out["events"] = events


def _accepted_streams(base: str) -> float:
    """Completions the server has taken: in flight (generating or waiting for the slot) or
    answered, from one scrape."""
    lines = requests.get(base + "/metrics", timeout=10).text.splitlines()
    prefixes = ("edgegen_inflight_requests ", 'edgegen_requests_total{endpoint="/v1/completions"')
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefixes))


def test_sigterm_finishes_streams_in_flight_then_exits_0(gpt2_bundle):
    # One generation slot: eight streams run one after the other, so most of them are still
    # waiting or generating when SIGTERM arrives.
    server = ServerProcess(gpt2_bundle, env={"EDGEGEN_MAX_CONCURRENT": "1",
                                             "EDGEGEN_INTRA_OP_THREADS": "1"})
    server.wait_ready()
    results = [{} for _ in range(8)]
    threads = [threading.Thread(target=_stream, args=(server.base, r)) for r in results]
    for t in threads:
        t.start()
    # SIGTERM once the server has taken all eight (where the client threads started slowly, the
    # first may already be answered).
    deadline = time.monotonic() + 60
    while _accepted_streams(server.base) < 8:
        assert time.monotonic() < deadline, server.output
        time.sleep(0.005)
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    code, output = server.stop()
    assert code == 0, output
    assert "Handling signal: term" in output
    assert [r.get("status") for r in results] == [200] * 8
    for r in results:
        assert r["events"][-1] == "data: [DONE]", r["events"][-3:]
        last = json.loads(r["events"][-2][6:])
        assert last["choices"][0]["finish_reason"] in ("length", "stop")
    # Streams that began after the signal prove the drain served work, not just buffers.
    assert sum(r["first_at"] > signalled for r in results) >= 1, output


def _write_config(path: Path, bundles: list[Path]) -> None:
    path.write_text("bundles:\n" + "".join(f"  - {b}\n" for b in bundles))


def _models(base: str) -> list[str]:
    return sorted(m["id"] for m in requests.get(base + "/v1/models", timeout=10).json()["data"])


def _wait_for(server: ServerProcess, text: str, timeout: float = 60) -> None:
    assert server.wait_for(text, timeout), f"no {text!r} in:\n{server.output}"


def test_sighup_reloads_from_config_and_refuses_a_tampered_bundle(dcgan_bundle, gpt2_bundle,
                                                                   tmp_path):
    config = tmp_path / "edge.yaml"
    _write_config(config, [dcgan_bundle])
    server = ServerProcess(config=config)
    server.wait_ready()
    try:
        assert _models(server.base) == ["tiny-dcgan"]

        tampered = Path(shutil.copytree(gpt2_bundle, tmp_path / "tampered"))
        data = bytearray((tampered / "tokenizer.json").read_bytes())
        data[10] ^= 0x01
        (tampered / "tokenizer.json").write_bytes(bytes(data))
        _write_config(config, [dcgan_bundle, tampered])
        server.signal(signal.SIGHUP)
        _wait_for(server, "reload on SIGHUP refused")
        assert "checksum mismatch for 'tokenizer.json'" in server.output
        assert _models(server.base) == ["tiny-dcgan"]
        r = requests.post(server.base + "/v1/images/generations", json={"seed": 3}, timeout=30)
        assert r.status_code == 200  # the old model kept serving

        _write_config(config, [dcgan_bundle, gpt2_bundle])
        server.signal(signal.SIGHUP)
        _wait_for(server, "reload: serving ['tiny-dcgan', 'tiny-gpt2']")
        assert _models(server.base) == ["tiny-dcgan", "tiny-gpt2"]
        r = requests.post(server.base + "/v1/completions",
                          json={"prompt": "The", "max_tokens": 4}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        code, output = server.stop()
    assert code == 0, output
