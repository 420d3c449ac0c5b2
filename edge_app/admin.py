"""Reload: `POST /admin/reload` (authenticated) and SIGHUP.

Both re-read the configuration (file and environment: the bundle list and the API keys), or
take the bundle list the admin call offers, then load every bundle (schema, sha256 of each
file, ONNX Runtime session, warm-up) before one swap. On any failure the models that were
serving keep serving and the reason is returned (admin) or logged (SIGHUP).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

from flask import Blueprint, Flask, current_app, jsonify, request

from .bundle import BundleError
from .config import Config, ConfigError
from .errors import Conflict, InvalidRequest
from .runtime import ModelRegistry, Swap

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")


def reload_models(app: Flask, bundles: list[str] | None = None) -> Swap:
    """Re-read the config, load the bundles and swap them in; BundleError/ConfigError (old
    models kept) or RuntimeError (a reload is already running)."""
    loader: Callable[[], Config] = app.extensions["edgegen.config_loader"]
    stats = app.extensions["edgegen.metrics"]
    registry: ModelRegistry = app.extensions["edgegen.models"]
    old = dict(registry.models)
    try:
        config = loader()
        keys = config.all_api_keys()
        swap = registry.load(config, tuple(bundles) if bundles is not None else None)
    except (BundleError, ConfigError):
        stats.reloads.labels("failure").inc()
        raise
    stats.reloads.labels("success").inc()
    app.extensions["edgegen.api_keys"] = keys
    info = stats.model_info
    for name, model in old.items():
        if registry.models.get(name) is not model:
            info.remove(*model_labels(model))
    for model in registry.models.values():
        info.labels(*model_labels(model)).set(1)
    log.info("reload: serving %s (loaded %s, unchanged %s) in %.2f s", swap.models, swap.loaded,
             swap.reused, swap.seconds)
    return swap


def model_labels(model) -> tuple[str, ...]:
    m = model.bundle.manifest
    return (m.name, m.family, m.task, m.precision, model.runtime, model.requested_providers,
            str(m.schema_version))


@bp.post("/reload")
def reload():
    body: Any = request.get_json(force=True, silent=True) if request.data else {}
    if not isinstance(body, dict) or set(body) - {"bundles"}:
        raise InvalidRequest("body must be empty or {\"bundles\": [\"<bundle dir>\", ...]}")
    bundles = body.get("bundles")
    if "bundles" in body and (not isinstance(bundles, list) or not bundles
                              or not all(isinstance(b, str) and b for b in bundles)):
        raise InvalidRequest("'bundles' must be a non-empty list of bundle directories",
                             param="bundles")
    app = current_app._get_current_object()
    try:
        swap = reload_models(app, bundles)
    except RuntimeError as exc:
        raise Conflict(str(exc)) from None
    except (BundleError, ConfigError) as exc:
        log.warning("reload refused, still serving %s: %s",
                    sorted(app.extensions["edgegen.models"].models), exc)
        raise InvalidRequest(f"reload refused, the previous models keep serving: {exc}",
                             code="invalid_bundle") from None
    return jsonify({"status": "reloaded", "models": swap.models, "loaded": swap.loaded,
                    "unchanged": swap.reused, "seconds": swap.seconds})


def install_sighup(app: Flask) -> None:
    """SIGHUP reloads in a background thread (a signal handler must return quickly). Call from
    the main thread of the process that serves (a gunicorn worker, after its fork)."""

    def run():
        try:
            reload_models(app)
        except (BundleError, ConfigError, RuntimeError) as exc:
            log.error("reload on SIGHUP refused, still serving %s: %s",
                      sorted(app.extensions["edgegen.models"].models), exc)
        except Exception:  # keep serving whatever went wrong
            log.exception("reload on SIGHUP failed; still serving the previous models")

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(
        target=run, name="edgegen-reload", daemon=True).start())
