"""The front's connection state machine (edge_app/frontconn.py) on a real socket pair, driven
by hand as the worker's event loop drives it: a request reaches a thread only once complete,
each write of the thread goes out as soon as the loop runs (server-sent events are not held
back), an oversize body is refused before it is sent, and a client that stops reading is
dropped, freeing the thread that waits on it."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import PollableMethodQueue

from edge_app.frontconn import BUSY, HIGH_WATER, Conn


class Loop:
    """The parts of FrontWorker a connection uses, and a way to run its loop once."""

    def __init__(self, max_body_bytes: int = 1024, send_timeout_s: float = 5.0):
        self.limits = SimpleNamespace(header_timeout_s=10.0, body_timeout_s=10.0,
                                      send_timeout_s=send_timeout_s,
                                      max_body_bytes=max_body_bytes, budget=1 << 20)
        self.cfg = SimpleNamespace(keepalive=2)
        self.alive, self.buffered = True, 0
        self.poller = selectors.DefaultSelector()
        self.method_queue = PollableMethodQueue()
        self.method_queue.init()
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, None)
        self.log = logging.getLogger("test_front")
        self.dispatched: list[Conn] = []
        self.dropped: list[Conn] = []
        self.rejected: list[str] = []

    enqueue_req = lambda self, conn: self.dispatched.append(conn)  # noqa: E731
    drop = lambda self, conn: self.dropped.append(conn)  # noqa: E731
    count_rejected = lambda self, reason: self.rejected.append(reason)  # noqa: E731

    def close(self) -> None:
        self.poller.close()
        self.method_queue.close()

    def run_once(self, timeout: float = 0.2) -> None:
        for key, mask in self.poller.select(timeout):
            if key.data is None:
                self.method_queue.run_callbacks(key.fileobj)
            else:
                key.data.on_ready(mask)


@pytest.fixture
def loop():
    made: list[Loop] = []
    yield lambda **kw: made.append(Loop(**kw)) or made[-1]
    for one in made:
        one.close()


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(5)
    yield server, client
    client.close()
    server.close()


def _conn(loop: Loop, server: socket.socket) -> Conn:
    conn = Conn(loop, server, ("127.0.0.1", 40000), ("127.0.0.1", 8080))
    conn.interest()
    return conn


def test_a_request_reaches_a_thread_only_when_complete(pair, loop):
    server, client = pair
    loop = loop()
    conn = _conn(loop, server)
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    for piece in (request[:10], request[10:], b"he", b"llo" + b"GET /next"):
        client.sendall(piece)
        loop.run_once()
        if piece != b"llo" + b"GET /next":
            assert not loop.dispatched  # head or body still incomplete: no thread
    assert loop.dispatched == [conn] and conn.state == BUSY
    assert conn.sock.recv(1 << 16) == request + b"hello"  # exactly one request
    assert bytes(conn.inbuf) == b"GET /next"  # the next one waits its turn


def test_each_write_goes_out_when_the_loop_runs(pair, loop):
    server, client = pair
    loop = loop()
    conn = _conn(loop, server)
    client.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_once()
    for i in range(5):  # what a streaming thread does, event by event
        event = b"data: %d\n\n" % i
        conn.sock.sendall(event)
        loop.run_once()
        assert client.recv(100) == event  # received before the next event is written


def test_an_oversize_body_is_refused_before_it_is_sent(pair, loop):
    server, client = pair
    loop = loop(max_body_bytes=1024)
    _conn(loop, server)
    client.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    loop.run_once()
    loop.run_once()
    answer = client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"max_body_bytes (1024 bytes)" in answer
    assert not loop.dispatched


def test_a_client_that_stops_reading_is_dropped_and_frees_its_thread(pair, loop):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    loop = loop(send_timeout_s=0.5)
    conn = _conn(loop, server)
    client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_once()
    outcome: list = []

    def thread():  # writes far more than the client takes; waits above HIGH_WATER
        try:
            conn.sock.sendall(b"x" * (HIGH_WATER + (1 << 20)))
            outcome.append("sent")
        except BrokenPipeError:
            outcome.append("broken pipe")

    writer = threading.Thread(target=thread)
    writer.start()
    deadline = time.monotonic() + 5
    while not conn.closed and time.monotonic() < deadline:
        loop.run_once(0.05)
        conn.expired(time.monotonic())
    writer.join(5)
    assert conn.closed and loop.dropped == [conn]
    assert outcome == ["broken pipe"]  # the thread is free again


def test_a_client_that_half_closes_after_its_request_gets_its_whole_answer(pair, loop):
    server, client = pair
    loop = loop()
    conn = _conn(loop, server)
    client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    client.shutdown(socket.SHUT_WR)  # done sending; still reading
    loop.run_once()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"y" * 300_000
    conn.sock.sendall(answer)  # more than the socket buffers hold at once
    conn.finished(keepalive=True)
    received, deadline = b"", time.monotonic() + 10
    while len(received) < len(answer) and time.monotonic() < deadline:
        loop.run_once(0.05)
        try:
            client.settimeout(0.05)
            received += client.recv(1 << 20)
        except TimeoutError:
            pass
        except OSError:  # reset: the answer was cut
            break
    assert len(received) == len(answer) and received == answer
    for _ in range(5):
        loop.run_once(0.05)
    assert conn.closed  # then closed, having read the client's end
