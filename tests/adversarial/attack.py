"""Hostile clients for the adversarial tier: connections that trickle, stay silent or stop
reading, each held (reconnected whenever the server closes it) until a deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter


class Held:
    """`count` connections of one kind to 127.0.0.1:`port`, each in its own thread, held until
    `seconds` have passed. `answers` counts the first line of what the server sent before
    closing (e.g. b"HTTP/1.1 408 Request Timeout"), `opened` the connections made."""

    KINDS = ("headers", "body", "silent", "reader")

    def __init__(self, port: int, kind: str, count: int, seconds: float, path: str = "/"):
        assert kind in self.KINDS
        self.port, self.kind, self.path = port, kind, path
        self.deadline = time.monotonic() + seconds
        self.answers: Counter = Counter()
        self.opened = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._hold, daemon=True) for _ in range(count)]

    def __enter__(self) -> "Held":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.deadline = 0
        for t in self.threads:
            t.join(10)

    def _hold(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                sock = socket.socket()
                if self.kind == "reader":  # a tiny window: the answer cannot all be in flight
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                time.sleep(0.2)
                continue
            with self.lock:
                self.opened += 1
            try:
                answer = self._behave(sock)
            except OSError:
                answer = b"(reset)"
            finally:
                sock.close()
            with self.lock:
                self.answers[answer.split(b"\r\n", 1)[0]] += 1

    def _behave(self, sock: socket.socket) -> bytes:
        """Misbehave until the server answers or closes, or the deadline passes."""
        if self.kind == "reader":
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            while time.monotonic() < self.deadline:  # read nothing; is it closed yet?
                if _closed_by_peer(sock):
                    return b"(closed while not reading)"
                time.sleep(1)
            return b"(held)"
        if self.kind == "headers":
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            drip, interval = b"X-Slow: 1\r\n", 2.0
        elif self.kind == "body":
            sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            drip, interval = b" ", 1.0
        else:
            drip, interval = b"", 1.0
        sock.settimeout(interval)
        while time.monotonic() < self.deadline:
            try:
                data = sock.recv(4096)
                return data or b"(closed)"
            except TimeoutError:
                if drip:
                    sock.sendall(drip)
        return b"(held)"


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the server reset or closed the connection (a write then fails)."""
    try:
        sock.send(b"\r\n")  # ignored by servers between requests; fails once closed
        return False
    except OSError:
        return True
