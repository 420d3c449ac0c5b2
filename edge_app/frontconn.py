"""One client connection of a worker's front (edge_app/front.py, which says why): a state
machine driven by the worker's event loop, which reads the request (head, then body, within
their deadlines) and sends the response from a buffer the request thread writes to.

    head -> body -> busy (a thread runs the app; its writes are buffered and sent by the loop)
         -> idle (kept alive: the next request's first byte) -> head ...
    linger: the last answer is out; read and discard until the client closes (or 2 s)
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import threading
import time
from collections import deque

from .httpframe import BadChunk, BodyTooLarge, ChunkScanner, HeadTooLarge, scan_head

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
READ_CHUNK = 64 * 1024
HIGH_WATER = 4 << 20  # a thread that writes this far ahead of its client waits for it
LINGER_S = 2.0  # after the last byte of a closing connection, read what the client still sends
BUFFER_BUDGET = 64 << 20  # request bytes all connections of a worker may hold at once (at least)
HEAD, BODY, BUSY, IDLE, LINGER = "head", "body", "busy", "idle", "linger"


def error_response(status: int, reason: str, code: str, message: str,
                   extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 answer with our JSON error body, closing the connection."""
    kind = ("unavailable_error" if status == 503 else "invalid_request_error" if status < 500
            else "server_error")
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Wire:
    """The socket as a request thread sees it: the request's bytes to read, and the
    connection's output buffer to write to (the event loop sends from it)."""

    def __init__(self, conn: "Conn", request: bytes):
        self.conn, self.data, self.pos = conn, request, 0

    def recv(self, size: int) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def sendall(self, data) -> None:
        self.conn.queue(bytes(data))

    def send(self, data) -> int:
        if data != CONTINUE:  # the front answered Expect: 100-continue itself
            self.conn.queue(bytes(data))
        return len(data)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        return self.conn.queue_file(file, offset, count)

    def shutdown(self, how: int) -> None:
        self.conn.must_close = True

    close = lambda self: self.shutdown(socket.SHUT_RDWR)  # noqa: E731
    gettimeout = lambda self: None  # noqa: E731
    setblocking = settimeout = lambda self, value: None  # noqa: E731


class Conn:
    """One client connection, driven by the worker's event loop (and, for its output, by the
    thread serving its request)."""

    def __init__(self, worker: "FrontWorker", raw: socket.socket, client, server):
        self.worker, self.raw, self.client, self.server = worker, raw, client, server
        self.state, self.deadline = HEAD, time.monotonic() + worker.limits.header_timeout_s
        self.inbuf = bytearray()
        self.head = self.chunks = None
        self.sock: Wire | None = None  # gunicorn's handle_request writes to conn.sock
        self.out: deque = deque()
        self.out_bytes, self.progress = 0, time.monotonic()
        self.cond = threading.Condition()
        self.closed = self.must_close = False
        self.eof = False  # the client closed its side (it may still read our answer)
        self.events = 0

    # ---------------------------------------------------------------- reading (event loop)

    def on_ready(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if mask & selectors.EVENT_READ and not self.closed:
            self.read()

    def read(self) -> None:
        try:
            data = self.raw.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            return self.close()
        if not data:
            if not self.out and self.sock is None:
                return self.close()
            # Half-closed after its request: finish the answer, then close.
            self.eof = self.must_close = True
            return self.interest()
        if self.state == LINGER or self.must_close:
            return  # discarded: the (last) answer is out or going, the client still sends
        if self.state == IDLE:
            self.state, self.deadline = HEAD, time.monotonic() + self.worker.limits.header_timeout_s
        if self.worker.buffered + len(data) > self.worker.limits.budget:
            return self.refuse(503, "Service Unavailable", "server_busy", "server busy: too many "
                               "request bytes in flight", (("Retry-After", "5"),))
        self.inbuf += data
        self.worker.buffered += len(data)
        self.advance()

    def advance(self) -> None:
        """Move through head and body as far as the buffered bytes allow; dispatch a complete
        request to a thread."""
        limits = self.worker.limits
        try:
            if self.state == HEAD:
                while self.inbuf[:2] == b"\r\n":  # empty lines before a request are ignored
                    self._take(2)
                self.head = scan_head(self.inbuf)
                if self.head is None:
                    return
                if self.head.length is not None and self.head.length > limits.max_body_bytes:
                    raise BodyTooLarge(f"{self.head.length} bytes")
                self.chunks = ChunkScanner(self.head.end, limits.max_body_bytes) \
                    if self.head.chunked else None
                self.state, self.deadline = BODY, time.monotonic() + limits.body_timeout_s
                if self.head.expect_continue and not self._body_end():
                    self._push(CONTINUE)
            if self.state == BODY:
                end = self._body_end()
                if end is not None:
                    self.dispatch(end)
        except HeadTooLarge as exc:
            self.refuse(431, "Request Header Fields Too Large", "headers_too_large", str(exc))
        except BodyTooLarge:
            self.refuse(413, "Request Entity Too Large", "request_entity_too_large",
                        f"the request body is larger than max_body_bytes "
                        f"({limits.max_body_bytes} bytes)")
        except BadChunk:
            self.must_close = True  # gunicorn refuses it; nothing after it is a request
            self.dispatch(len(self.inbuf))

    def _body_end(self) -> int | None:
        head = self.head
        if head.malformed:
            self.must_close = True
            return head.end
        if self.chunks is not None:
            return self.chunks.feed(self.inbuf)
        end = head.end + (head.length or 0)
        return end if len(self.inbuf) >= end else None

    def _take(self, n: int) -> bytes:
        data = bytes(self.inbuf[:n])
        del self.inbuf[:n]
        self.worker.buffered -= len(data)
        return data

    def dispatch(self, end: int) -> None:
        self.state, self.sock = BUSY, Wire(self, self._take(end))
        self.head = self.chunks = None
        self.interest()
        self.worker.enqueue_req(self)

    def finished(self, keepalive: bool) -> None:
        """The thread is done with the request (the answer may still be in the buffer)."""
        self.sock = None
        if not keepalive or not self.worker.alive:
            self.must_close = True
        self.state = IDLE
        self.deadline = time.monotonic() + self.worker.cfg.keepalive
        if not self.out:
            self.next_request()
        else:
            self.interest()

    def next_request(self) -> None:
        if self.closed:
            return
        if self.must_close:
            return self.linger()
        if self.inbuf:  # the client sent its next request already (pipelining)
            self.state, self.deadline = HEAD, time.monotonic() + self.worker.limits.header_timeout_s
            self.advance()
        if not self.closed:
            self.interest()

    def refuse(self, status: int, reason: str, code: str, message: str, extra=()) -> None:
        """Answer from the loop (no thread, no app) and close."""
        self.worker.log.info("refused %s %s from %s: %s", status, reason, self.client, message)
        self._take(len(self.inbuf))
        self.state, self.must_close = IDLE, True
        self._push(error_response(status, reason, code, message, extra))

    def linger(self) -> None:
        """Half-close, then read and discard until the client closes or LINGER_S passes, so
        that unread request bytes do not turn our close into a reset that eats the answer."""
        if self.eof:
            return self.close()
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close()
        self.state, self.deadline = LINGER, time.monotonic() + LINGER_S
        self.interest()

    # ---------------------------------------------------------------- writing

    def queue(self, data: bytes) -> None:
        """From the request thread: buffer `data` for the loop to send; wait while the client
        is more than HIGH_WATER behind. Raises BrokenPipeError once the connection is gone."""
        with self.cond:
            if self.closed:
                raise BrokenPipeError(errno.EPIPE, "the client connection is closed")
            self.out.append(memoryview(data))
            self.out_bytes += len(data)
        self.worker.method_queue.defer(self.flush)
        with self.cond:
            while self.out_bytes > HIGH_WATER and not self.closed:
                self.cond.wait(1.0)
            if self.closed:
                raise BrokenPipeError(errno.EPIPE, "the client connection is closed")

    def queue_file(self, file, offset: int, count: int | None) -> int:
        """From the request thread: the loop sends `count` bytes of `file` with sendfile."""
        fd = os.dup(file.fileno())
        if count is None:
            count = os.fstat(fd).st_size - offset
        with self.cond:
            if self.closed:
                os.close(fd)
                raise BrokenPipeError(errno.EPIPE, "the client connection is closed")
            self.out.append([fd, offset, count])
        self.worker.method_queue.defer(self.flush)
        return count

    def _push(self, data: bytes) -> None:
        with self.cond:
            self.out.append(memoryview(data))
            self.out_bytes += len(data)
        self.flush()

    def flush(self) -> None:
        """Send what the socket takes now, without blocking (event loop)."""
        if self.closed:
            return
        try:
            with self.cond:
                self._send()
                if self.out_bytes <= HIGH_WATER:
                    self.cond.notify_all()
        except OSError:  # reset, broken pipe: the client is gone
            return self.close()
        if not self.out and self.state == IDLE and self.sock is None:
            self.next_request()
        else:
            self.interest()

    def _send(self) -> None:
        while self.out:
            item = self.out[0]
            if isinstance(item, memoryview):
                try:
                    sent = self.raw.send(item)
                except BlockingIOError:
                    return
                self.out_bytes -= sent
                if sent < len(item):
                    self.out[0] = item[sent:]
                    self.progress = time.monotonic()
                    return
            else:
                fd, offset, left = item
                try:
                    sent = os.sendfile(self.raw.fileno(), fd, offset, min(left, 1 << 20))
                except BlockingIOError:
                    return
                if sent == 0:  # the file shrank under us: the length we announced is a lie
                    raise OSError(errno.EIO, "file truncated while being sent")
                item[1], item[2] = offset + sent, left - sent
                self.progress = time.monotonic()
                if item[2]:
                    continue
                os.close(fd)
            self.out.popleft()
            self.progress = time.monotonic()

    # ---------------------------------------------------------------- lifecycle

    def interest(self) -> None:
        """(Re-)register with the selector for what this connection waits on now."""
        if self.closed:
            return
        events = selectors.EVENT_READ if self.state in (HEAD, BODY, IDLE, LINGER) \
            and not self.eof else 0
        if self.out:
            events |= selectors.EVENT_WRITE
        poller = self.worker.poller
        if events == self.events:
            return
        if not self.events:
            poller.register(self.raw, events, self)
        elif not events:
            poller.unregister(self.raw)
        else:
            poller.modify(self.raw, events, self)
        self.events = events

    def expired(self, now: float) -> bool:
        """Deadlines (event loop, about once a second): True if the connection was closed."""
        if self.out and now - self.progress > self.worker.limits.send_timeout_s:
            self.worker.log.info("dropped %s: it read nothing of its answer for %g s",
                                 self.client, self.worker.limits.send_timeout_s)
            self.close()
        elif self.state in (HEAD, BODY) and now > self.deadline:
            if self.inbuf and not self.out:
                # Counted only when a request had begun: a connection that sent nothing is
                # what browsers' preconnects look like too.
                self.worker.count_rejected("client_timeout")
                what = "headers" if self.state == HEAD else "body"
                limit = (self.worker.limits.header_timeout_s if self.state == HEAD
                         else self.worker.limits.body_timeout_s)
                self.refuse(408, "Request Timeout", "request_timeout",
                            f"the request {what} did not arrive within {limit:g} s")
                self.deadline = now + LINGER_S
            else:
                self.close()
        elif self.state in (IDLE, LINGER) and not self.out and self.sock is None \
                and now > self.deadline:
            self.close()
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        with self.cond:
            self.closed = True
            for item in self.out:
                if not isinstance(item, memoryview):
                    os.close(item[0])
            self.out.clear()
            self.out_bytes = 0
            self.cond.notify_all()
        if self.events:
            self.worker.poller.unregister(self.raw)
            self.events = 0
        self.raw.close()
        self._take(len(self.inbuf))
        self.worker.drop(self)
