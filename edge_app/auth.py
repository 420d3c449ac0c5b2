"""Bearer API keys on generation and admin routes (OpenAI's `Authorization: Bearer <key>`).

/health, /ready, the playground and companion pages and /openapi.json stay public (probes and
discovery; the companion's bundle files are not);
/metrics too unless `metrics_auth`. Keys are compared in constant time (`hmac.compare_digest`,
against every key, so timing tells neither the key nor which one matched). With no key
configured the API is open, and the server warns when it listens beyond loopback.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, request

from .errors import Unauthorized

log = logging.getLogger(__name__)
PUBLIC = frozenset({"/", "/health", "/ready", "/openapi.json", "/companion/",
                    "/companion/<name>"})
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode("utf-8")
    matched = False
    for key in keys:  # no early exit
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def protected(rule: str, metrics_auth: bool) -> bool:
    return rule not in PUBLIC and (rule != "/metrics" or metrics_auth)


def init_app(app: Flask, keys: tuple[str, ...]) -> None:
    app.extensions["edgegen.api_keys"] = keys  # reload may replace them (rotated key file)
    cfg = app.extensions["edgegen.config"]
    if not keys and cfg.host not in LOOPBACK:
        log.warning("no API key configured and listening on %s: anyone who reaches port %d "
                    "can generate; set api_keys or api_key_file", cfg.host, cfg.port)

    @app.before_request
    def _authenticate():
        keys = current_app.extensions["edgegen.api_keys"]
        rule = request.url_rule.rule if request.url_rule else None
        if not keys or rule is None or not protected(rule, cfg.metrics_auth):
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key_matches(token.strip(), keys):
            current_app.extensions["edgegen.metrics"].rejected.labels("unauthorized").inc()
            raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer <key>'")
