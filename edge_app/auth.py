"""Who may call what: the Host check, bearer API keys, admin keys, and a brake on wrong keys.

Host (every route): a DNS-rebinding page (evil.example resolving to 127.0.0.1) sends its own
name as Host, so only names this server answers to pass: IP addresses (a rebinding page cannot
make the browser send one), localhost and *.localhost, this machine's name, and allowed_hosts.

API keys (OpenAI's `Authorization: Bearer <key>`) on generation and bundle routes: /health,
/ready, the playground and companion pages and /openapi.json stay public (probes and
discovery; the companion's bundle files are not); /metrics too unless `metrics_auth`. Keys
are compared in constant time (`hmac.compare_digest`, against every key, so timing tells
neither the key nor which one matched). With no key configured the API is open, and the
server warns when it listens beyond loopback.

Admin (/admin/*): admin keys only when admin_keys are set (an API key does not open it);
otherwise loopback clients only, with their API key if API keys are set.

Wrong keys: a client address that sends auth_failures_per_minute wrong keys within a minute
gets 429 with Retry-After, without its key being checked, until the minute has passed (per
worker; a missing key does not count: it guesses nothing).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import socket
import threading
import time
from collections import OrderedDict, deque

from flask import Flask, request

from .errors import Forbidden, TooManyRequests, Unauthorized
from .state import current, of

log = logging.getLogger(__name__)
PUBLIC = frozenset({"/", "/health", "/ready", "/openapi.json", "/companion/",
                    "/companion/<name>"})
LOOPBACK = ("127.0.0.1", "::1", "localhost")
WINDOW_S = 60.0
MAX_TRACKED = 4096  # client addresses remembered (the oldest are forgotten first)


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:  # no early exit
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def protected(rule: str, metrics_auth: bool) -> bool:
    return rule not in PUBLIC and (rule != "/metrics" or metrics_auth)


class Throttle:
    """Wrong keys per client address within a sliding minute (bounded memory)."""

    def __init__(self, per_minute: int):
        self.limit = per_minute
        self.failures: OrderedDict[str, deque] = OrderedDict()
        self.lock = threading.Lock()

    def wait_s(self, addr: str) -> int:
        """Seconds until `addr` may try a key again; 0 when it may now."""
        if not self.limit:
            return 0
        with self.lock:
            times = self.failures.get(addr)
            now = time.monotonic()
            while times and now - times[0] > WINDOW_S:
                times.popleft()
            if not times or len(times) < self.limit:
                return 0
            return max(1, math.ceil(WINDOW_S - (now - times[0])))

    def failed(self, addr: str) -> None:
        if not self.limit:
            return
        with self.lock:
            times = self.failures.pop(addr, None) or deque(maxlen=self.limit)
            times.append(time.monotonic())
            self.failures[addr] = times
            while len(self.failures) > MAX_TRACKED:
                self.failures.popitem(last=False)


def _check_key(keys: tuple[str, ...], what: str) -> None:
    """The bearer token must be one of `keys`; wrong ones are counted and braked."""
    state = current()
    addr = request.remote_addr or "?"
    wait = state.throttle.wait_s(addr)
    if wait:
        state.metrics.rejected.labels("auth_throttled").inc()
        raise TooManyRequests(f"too many wrong keys from {addr}: try again in {wait} s", wait)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key_matches(token.strip(), keys):
        if token.strip():
            state.throttle.failed(addr)
        state.metrics.rejected.labels("unauthorized").inc()
        raise Unauthorized(f"missing or invalid {what}: send 'Authorization: Bearer <key>'")


def is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def check_admin() -> None:
    """Before every /admin route: an admin key, or a loopback client when none is set."""
    keys = current().admin_keys
    if keys:
        _check_key(keys, "admin key (admin_keys; an API key does not open /admin)")
    elif not is_loopback(request.remote_addr):
        raise Forbidden("/admin answers loopback clients only: set admin_keys to administer "
                        "this server from elsewhere")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if host.startswith("["):  # [IPv6]:port
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        pass
    own = socket.gethostname().lower()
    if not name or name in ("localhost", own, own.split(".")[0]) or name.endswith(".localhost"):
        return True
    return any(a == "*" or a.lower() == name or (a.startswith("*.") and name.endswith(a[1:].lower()))
               for a in allowed)


def init_app(app: Flask) -> None:
    """Host and key checks before every request; the keys are the state's (a reload may
    replace them: a rotated key file)."""
    state = of(app)
    cfg = state.config
    if not state.api_keys and cfg.host not in LOOPBACK:
        log.warning("no API key configured and listening on %s: anyone who reaches port %d "
                    "can generate; set api_keys or api_key_file", cfg.host, cfg.port)

    @app.before_request
    def _check_host():
        if not host_allowed(request.host, cfg.allowed_hosts):
            raise Forbidden(f"this server does not answer to the host name in the Host header; "
                            f"add it to allowed_hosts if it is this device's")

    @app.before_request
    def _authenticate():
        keys = current().api_keys
        rule = request.url_rule.rule if request.url_rule else None
        if not keys or rule is None or not protected(rule, cfg.metrics_auth):
            return
        if rule.startswith("/admin/") and current().admin_keys:
            return  # admin keys only (check_admin)
        _check_key(keys, "API key")
