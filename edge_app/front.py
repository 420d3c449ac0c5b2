"""The front of each gunicorn worker: its event loop reads every request completely and writes
every response, so that a slow or silent client never holds a request thread.

Why (issue 18): gunicorn's gthread worker hands a connection to a thread when it is accepted,
and the thread then reads the headers and the body, and writes the response, at the client's
pace. 23 connections sending a header line every 2 s, 40 sending a body at 1 byte/s, or 30
sending nothing held every thread, and /health with them. Of the ways out:

- an asynchronous worker (gevent; or an ASGI server with a WSGI adapter) runs every connection
  on one event loop, which ONNX Runtime and tokenizers would stall for whole seconds unless
  every model call moved to a thread pool, i.e. back to threads; gevent also patches the
  threading that admission, the power sampler and ONNX Runtime rely on;
- a buffering proxy (nginx) in the image is absent from `python -m edge_app serve` on a
  developer machine, is one more process to supervise and one more hop, and adds megabytes
  to the Pi image;
- so this: gthread's own event loop (selectors, in the worker's main thread) also reads each
  request, within deadlines (header_timeout_s, then body_timeout_s; a body over max_body_bytes
  gets 413 before it is read, chunked or not), and writes each response from a buffer per
  connection (a client that reads nothing for send_timeout_s is dropped; files go out with
  sendfile from the loop). Threads only run the Flask app, on a request already in memory.
  No new dependency; the master is unchanged (one thread, forking workers); SIGTERM drains and
  SIGHUP reloads as before; server-sent events go out as they are written.
"""

from __future__ import annotations

import errno
import os
import signal
import time

from gunicorn import http
from gunicorn.http.errors import (ExpectationFailed, LimitRequestHeaders, LimitRequestLine,
                                  ParseException, UnsupportedTransferCoding)
from gunicorn.workers.gthread import ThreadWorker

from .frontconn import BUFFER_BUDGET, IDLE, Conn, error_response
from .state import find

class Limits:
    def __init__(self, config):
        self.header_timeout_s, self.body_timeout_s = config.header_timeout_s, config.body_timeout_s
        self.send_timeout_s, self.max_body_bytes = config.send_timeout_s, config.max_body_bytes
        self.budget = max(BUFFER_BUDGET, 4 * config.max_body_bytes)


class FrontWorker(ThreadWorker):
    """gthread whose event loop reads requests and writes responses (see the module doc)."""

    def init_process(self):
        self.limits = Limits(self.app.edgegen)
        self.conns: set[Conn] = set()
        self.buffered = 0
        self.spare_fd = os.open(os.devnull, os.O_RDONLY)  # to shed a connection at EMFILE
        super().init_process()

    def init_signals(self):
        super().init_signals()
        # gunicorn leaves SIGHUP at its default (terminate) in workers; until post_worker_init
        # has admin.install_sighup take it (edge_app/serve.py), a hang-up is ignored, then
        # caught up with from the run state.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def accept(self, listener):
        try:
            raw, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._shed(listener)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        raw.setblocking(False)
        conn = Conn(self, raw, client, listener.getsockname())
        self.nr_conns += 1
        self.conns.add(conn)
        conn.interest()

    def _shed(self, listener) -> None:
        """Out of file descriptors: accept with the spare one and close at once, rather than
        leave the client hanging in the backlog or spin on a listener that stays readable."""
        self.log.warning("out of file descriptors: closing a new connection at once")
        os.close(self.spare_fd)
        try:
            listener.accept()[0].close()
        except OSError:
            pass
        self.spare_fd = os.open(os.devnull, os.O_RDONLY)

    def drop(self, conn: Conn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.nr_conns -= 1

    def wait_for_and_dispatch_events(self, timeout):
        try:
            events = self.poller.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            return
        for key, mask in events:
            if isinstance(key.data, Conn):
                key.data.on_ready(mask)
            else:
                key.data(key.fileobj)

    def handle(self, conn: Conn):
        """In a request thread: parse the buffered request and run the app on it; True to keep
        the connection open."""
        req = None
        try:
            req = next(http.get_parser(self.cfg, conn.sock, conn.client))
            return bool(req) and self.handle_request(req, conn)
        except (http.errors.NoMoreData, StopIteration):
            return False
        except OSError as exc:  # the client went away while we wrote
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("socket error while serving a request")
            return False
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
            return False

    def finish_request(self, conn: Conn, fut):
        try:
            keepalive = bool(fut.result())
        except BaseException:
            keepalive = False
        if not conn.closed:
            conn.finished(keepalive)

    def handle_error(self, req, client, addr, exc):
        """gunicorn's answer to a request it cannot parse (or an app failure outside Flask),
        as our JSON error instead of its HTML page."""
        status, reason, code = _status_of(exc)
        if status >= 500:
            self.log.exception("error handling a request")
            message = "internal server error"
        else:
            self.log.warning("invalid request from %s: %s", addr[0] if addr else "?", exc)
            message = f"invalid HTTP request: {exc}"
        try:
            client.sendall(error_response(status, reason, code, message))
        except OSError:
            pass

    def count_rejected(self, reason: str) -> None:
        state = find(self.wsgi)
        if state is not None:
            state.metrics.rejected.labels(reason).inc()

    # gthread's keep-alive bookkeeping, over our connections

    def murder_keepalived(self, force=False):
        now = time.monotonic()
        for conn in list(self.conns):
            if force:
                conn.close()
            else:
                conn.expired(now)

    def murder_pending(self):
        pass

    def _cap_keepalive(self, deadline):
        for conn in self.conns:
            if conn.state == IDLE:
                conn.deadline = min(conn.deadline, deadline)


def _status_of(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, LimitRequestLine):
        return 414, "URI Too Long", "uri_too_long"
    if isinstance(exc, LimitRequestHeaders):
        return 431, "Request Header Fields Too Large", "headers_too_large"
    if isinstance(exc, UnsupportedTransferCoding):
        return 501, "Not Implemented", "unsupported_transfer_coding"
    if isinstance(exc, ExpectationFailed):
        return 417, "Expectation Failed", "expectation_failed"
    if isinstance(exc, ParseException):
        return 400, "Bad Request", "bad_request"
    return 500, "Internal Server Error", "internal_error"
