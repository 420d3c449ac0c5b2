"""Slow and silent clients against the real server, default admission, one worker (issue 18,
item 1): 23 header tricklers, 40 body tricklers or 30 silent connections used to take every
request thread, and /health with them."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from ..integration.serverproc import ServerProcess
from .attack import Held

pytestmark = pytest.mark.adversarial
HOLD_S = 30.0


@pytest.fixture(scope="module")
def server(gpt2_bundle, dcgan_bundle):
    # Deadlines short enough that each kind of attacker is cut off within the 30 s hold.
    proc = ServerProcess(gpt2_bundle, dcgan_bundle, env={
        "EDGEGEN_POWER_SENSOR": "none", "EDGEGEN_HEADER_TIMEOUT_S": "10",
        "EDGEGEN_BODY_TIMEOUT_S": "10", "EDGEGEN_SEND_TIMEOUT_S": "5"})
    proc.wait_ready()
    yield proc
    code, output = proc.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


def test_200_slow_or_silent_connections_leave_health_and_generation_alone(server):
    kinds = {"headers": 50, "body": 50, "silent": 50, "reader": 50}
    health: list[float] = []
    generated: list[int] = []
    with Held(server.port, "headers", kinds["headers"], HOLD_S) as headers, \
            Held(server.port, "body", kinds["body"], HOLD_S) as body, \
            Held(server.port, "silent", kinds["silent"], HOLD_S) as silent, \
            Held(server.port, "reader", kinds["reader"], HOLD_S,
                 "/bundles/tiny-gpt2/model.onnx") as readers:
        time.sleep(1.0)  # all 200 connected and misbehaving
        end = time.monotonic() + HOLD_S - 2
        while time.monotonic() < end:
            started = time.monotonic()
            r = requests.get(server.base + "/health", timeout=5)
            health.append(time.monotonic() - started)
            assert r.status_code == 200
            if len(health) % 5 == 1:  # a generation of each kind, a few times
                image = requests.post(server.base + "/v1/images/generations",
                                      json={"model": "tiny-dcgan", "seed": len(health)},
                                      timeout=10)
                text = requests.post(server.base + "/v1/completions",
                                     json={"model": "tiny-gpt2", "prompt": "The",
                                           "max_tokens": 8, "stream": True}, timeout=10)
                generated += [image.status_code, text.status_code]
                assert text.text.rstrip().endswith("data: [DONE]")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    assert len(health) >= HOLD_S - 6 and max(health) < 1.0, health
    assert generated and set(generated) == {200}
    # The server ended each kind of misbehaviour on its own deadlines, and counted it.
    assert headers.answers[b"HTTP/1.1 408 Request Timeout"] >= kinds["headers"], headers.answers
    assert body.answers[b"HTTP/1.1 408 Request Timeout"] >= kinds["body"] // 2, body.answers
    assert silent.answers[b"(closed)"] >= kinds["silent"], silent.answers
    assert readers.opened >= kinds["reader"]
    text = requests.get(server.base + "/metrics", timeout=5).text
    timeouts = float(text.split('edgegen_requests_rejected_total{reason="client_timeout"} ')[1]
                     .split()[0])
    assert timeouts >= kinds["headers"] + kinds["body"] // 2  # silent ones are not counted


def _raw(port: int, head: bytes, body_chunks=(), pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: stop sending
                break
            time.sleep(pause)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        return data


def test_oversize_bodies_get_413_before_they_are_sent_chunked_or_not(server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n")
    started = time.monotonic()
    declared = _raw(server.port, head + b"Content-Length: 50000000\r\n\r\n")  # sends no body
    assert declared.startswith(b"HTTP/1.1 413 ") and time.monotonic() - started < 2
    chunk = b"%X\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    chunked = _raw(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n", [chunk] * 40)
    assert chunked.startswith(b"HTTP/1.1 413 "), chunked[:200]
    error = json.loads(chunked.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_entity_too_large" and "max_body_bytes" in error["message"]
    small = b'{"model": "tiny-gpt2", "prompt": "The", "max_tokens": 2}'
    ok = _raw(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n",
              [b"%X\r\n%s\r\n" % (len(small), small), b"0\r\n\r\n"])
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:300]  # chunked within the limit is served


def test_pipelined_and_kept_alive_requests_are_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        # both bodies, not just both status lines: the second body may come in a later packet
        while not (b'"status":"ok"' in data and b'"status":"ready"' in data) \
                and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b'"status":"ok"') < data.index(b'"status":"ready"')


def test_many_clients_at_once_are_all_answered(server):
    results: list[int] = []

    def one():
        results.append(requests.get(server.base + "/health", timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results.count(200) == 100
