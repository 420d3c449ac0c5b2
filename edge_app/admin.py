"""Reload: `POST /admin/reload` and SIGHUP.

Both re-read the configuration (file and environment: the bundle list and the keys), or take
the bundle list the admin call offers, then load every bundle (schema, sha256 of each file,
ONNX Runtime session, warm-up) before one swap. On any failure the models that were serving
keep serving and the reason is returned (admin) or logged (SIGHUP).

Every worker reloads, not only the one that took the request: that worker loads the set
first (so a bad bundle is refused before anything changes), writes it to the run state
(edge_app/runstate.py) and sends SIGHUP to the gunicorn master, which forwards it to every
worker; the answer waits, up to reload_timeout_s, for each of them to report. A worker that
gunicorn respawns later loads the same set from the run state.

Admin is its own role: its keys (admin_keys) are not API keys, and without one it answers
loopback clients only. It takes `application/json` only (a cross-site form cannot send that
without a CORS preflight, which this server never grants), and bundle lists only from under
bundle_root. The Host check (edge_app/auth.py) keeps DNS-rebinding pages out.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, current_app, jsonify, request

from .bundle import BundleError
from .config import Config, ConfigError
from .errors import ApiError, Conflict, InvalidRequest
from .auth import check_admin
from .limits import json_body
from .runtime import ModelRegistry, Swap
from .runstate import RunState
from .shapes import Array, Limits, Shape, Str
from .state import current, of

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(check_admin)


class UnsupportedMediaType(ApiError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class ReloadIncomplete(ApiError):
    status, type, code = 500, "server_error", "reload_incomplete"


def reload_models(app: Flask, bundles: list[str] | None = None) -> Swap:
    """Re-read the config, load the bundles and swap them in; BundleError/ConfigError (old
    models kept) or RuntimeError (a reload is already running)."""
    state = of(app)
    loader: Callable[[], Config] = state.config_loader
    stats = state.metrics
    registry: ModelRegistry = state.models
    old = dict(registry.models)
    try:
        config = loader()
        keys = config.all_api_keys()
        admin_keys = config.all_admin_keys(keys)
        swap = registry.load(config, tuple(bundles) if bundles is not None else None)
    except (BundleError, ConfigError):
        stats.reloads.labels("failure").inc()
        raise
    stats.reloads.labels("success").inc()
    state.api_keys, state.admin_keys = keys, admin_keys
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


def confine(entries: list[str], root: str) -> list[str]:
    """Bundle directories named over HTTP, as absolute paths inside bundle_root (names are
    taken relative to it; a symbolic link may not lead out). The same message whether a path
    outside exists or not, so the API cannot probe the filesystem."""
    if not root:
        raise InvalidRequest("this server takes no bundle list over HTTP: set bundle_root to "
                             "the directory holding the bundles (or reload the configured "
                             "ones with an empty body)", param="bundles")
    base = Path(os.path.realpath(root))
    out = []
    for entry in entries:
        try:
            real = Path(os.path.realpath(base / entry))
        except ValueError:  # an embedded NUL
            real = None
        if real is None or (real != base and base not in real.parents):
            raise InvalidRequest(f"bundle {entry!r} is not inside bundle_root", param="bundles")
        out.append(str(real))
    return out


RELOAD = Shape({"bundles": Array(
    Str(min_length=1), 1, description="Bundle directories, by name under bundle_root or by "
                                      "path inside it (absent: the configured ones).")},
    unknown_hint=": the body is empty or {\"bundles\": [\"<bundle dir>\", ...]}")


@bp.post("/reload")
def reload():
    """Load the configured bundles (empty body) or the listed ones, in every worker."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("/admin/reload takes Content-Type: application/json (an "
                                   "empty body or {\"bundles\": [...]})")
    bundles = RELOAD.parse(json_body(empty_ok=True), Limits())["bundles"]
    if bundles is not None:
        bundles = confine(bundles, current().config.bundle_root)
    app = current_app._get_current_object()
    job = _ReloadJob(app, bundles)
    threading.Thread(target=job.run, name="edgegen-admin-reload", daemon=True).start()
    timeout = of(app).config.reload_timeout_s
    if not job.done.wait(timeout):
        return jsonify({"status": "reloading", "message": f"the reload is still running after "
                        f"{timeout:g} s; it goes on, and the previous models serve until it "
                        f"is done (see /v1/models and the log)"}), 202
    if job.error is not None:
        raise job.error
    return jsonify(job.result)


class _ReloadJob:
    """One /admin/reload, in its own thread so that the request can answer in time."""

    def __init__(self, app: Flask, bundles: list[str] | None):
        self.app, self.bundles = app, bundles
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: ApiError | None = None

    def run(self) -> None:
        state: RunState | None = of(self.app).run_state
        try:
            if state is None:
                self.result = _describe(reload_models(self.app, self.bundles))
            else:
                with state.lock():
                    self.result = self._everywhere(state)
        except RuntimeError as exc:
            self.error = Conflict(str(exc))
        except (BundleError, ConfigError) as exc:
            log.warning("reload refused, still serving %s: %s",
                        sorted(of(self.app).models.models), exc)
            self.error = InvalidRequest(f"reload refused, the previous models keep serving: "
                                        f"{exc}", code="invalid_bundle")
        except ApiError as exc:
            self.error = exc
        except Exception as exc:  # keep serving whatever went wrong
            log.exception("reload failed; still serving the previous models")
            self.error = ReloadIncomplete(f"reload failed: {type(exc).__name__}")
        finally:
            self.done.set()

    def _everywhere(self, state: RunState) -> dict:
        """Load here, then have the master signal every worker and wait for their reports."""
        swap = reload_models(self.app, self.bundles)
        epoch = state.read()["epoch"] + 1
        state.write({"epoch": epoch, "bundles": self.bundles, "by": "admin", "delivered": False})
        of(self.app).epoch = epoch
        state.ack(epoch, True, None, swap.models)
        os.kill(os.getppid(), signal.SIGHUP)
        deadline = time.monotonic() + of(self.app).config.reload_timeout_s
        while True:
            current = state.read()
            workers = current.get("workers", []) if current.get("delivered") else []
            acks = state.acks(workers)
            pending = [pid for pid in workers if acks.get(pid, {}).get("epoch", -1) < epoch]
            if current["epoch"] != epoch or (workers and not pending):
                break  # every worker answered (or a later SIGHUP took over)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not workers:
            raise ReloadIncomplete("reloaded in this worker, but the gunicorn master did not pass "
                                   "the reload on to the others in time")
        failed = {pid: a["error"] for pid, a in acks.items() if a["epoch"] == epoch and not a["ok"]}
        if failed or pending:
            raise ReloadIncomplete(f"reloaded in this worker, but not in every worker: failed "
                                   f"{failed or 'none'}, no answer from {pending or 'none'}; the "
                                   f"set is saved, a restart of those workers loads it")
        return {**_describe(swap), "workers": len(workers)}


def _describe(swap: Swap) -> dict:
    return {"status": "reloaded", "models": swap.models, "loaded": swap.loaded,
            "unchanged": swap.reused, "seconds": swap.seconds}


def _reload_on_hangup(app: Flask) -> None:
    """What SIGHUP does in a worker: load the set of the run state's epoch (the configured
    one without a run state), unless this worker has it already, and report."""
    state: RunState | None = of(app).run_state
    current = state.read() if state is not None else None
    if current is not None and current["epoch"] == of(app).epoch:
        return  # this worker has that set (it made the /admin/reload, or booted with it)
    try:
        swap = reload_models(app, current["bundles"] if current else None)
        ok, error = True, None
    except (BundleError, ConfigError, RuntimeError) as exc:
        log.error("reload on SIGHUP refused, still serving %s: %s",
                  sorted(of(app).models.models), exc)
        ok, error = False, str(exc)
    except Exception as exc:  # keep serving whatever went wrong
        log.exception("reload on SIGHUP failed; still serving the previous models")
        ok, error = False, type(exc).__name__
    if current is not None:
        of(app).epoch = current["epoch"]
        models = swap.models if ok else sorted(of(app).models.models)
        state.ack(current["epoch"], ok, error, models)


def install_sighup(app: Flask) -> None:
    """SIGHUP reloads in a background thread (a signal handler must return quickly). Call from
    the main thread of the process that serves (a gunicorn worker, after its fork, before its
    models load in the background: a hang-up meanwhile is refused by the registry and caught up
    with once they are in, edge_app/serve.py `_load`). A hang-up that came before this call
    (ignored then: see FrontWorker.init_signals) is caught up with now, from the run state."""

    def start(*_):
        threading.Thread(target=_reload_on_hangup, args=(app,), name="edgegen-reload",
                         daemon=True).start()

    signal.signal(signal.SIGHUP, start)
    state: RunState | None = of(app).run_state
    if state is not None and state.read()["epoch"] != of(app).epoch:
        start()
