"""The Flask application factory, and the load of its models (at once, or later in whichever
thread the caller runs `load_models` from: a gunicorn worker's background, edge_app/serve.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from flask import Flask
from prometheus_client import CollectorRegistry

from . import __version__, admin, api, auth, completions, errors, health, metrics  # noqa: F401
from . import chat_api, companion, onnxrt, playground  # noqa: F401 (routes)
from .admission import Admission
from .auth import Throttle
from .config import Config, load_config
from .power.service import PowerService
from .runtime import ModelRegistry
from .runstate import RunState
from .state import KEY, ServerState, of
from .system import device_facts

log = logging.getLogger(__name__)


def create_app(config: Config | Mapping[str, Any] | None = None,
               config_loader: Callable[[], Config] | None = None,
               run_state: RunState | None = None, *, load: bool = True) -> Flask:
    """Build the server: config, error mapping, metrics, models (loaded and warmed), routes.

    `config_loader` gives a fresh Config on reload (the CLI re-reads its file and environment);
    by default a reload keeps this config. `run_state` (a gunicorn worker's) holds the bundle
    set the workers serve, which a reload over HTTP may have changed. With `load=False` the
    models are not loaded yet: the app answers (/health; 503 "loading" from /ready and the
    routes that need a model, edge_app/health.py) until the caller runs `load_models`. Raises
    BundleError, ConfigError or SensorError when a bundle, the config or the named power sensor
    cannot be used.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False

    stats = metrics.Metrics(CollectorRegistry())
    stats.device_info.labels(**device_facts(Path("/"), cfg.device_class,
                                            onnxrt.available_providers())).set(1)
    api_keys = cfg.all_api_keys()
    current = _run_state(run_state)
    app.extensions[KEY] = ServerState(
        config=cfg, config_loader=config_loader or (lambda: cfg),
        models=ModelRegistry(expected=len(current["bundles"] or cfg.bundles)),
        metrics=stats, run_state=run_state, epoch=current["epoch"],
        admission=Admission(cfg.max_concurrent, cfg.max_queue, cfg.queue_timeout_s, stats),
        power=PowerService(cfg, stats), throttle=Throttle(cfg.auth_failures_per_minute),
        api_keys=api_keys, admin_keys=cfg.all_admin_keys(api_keys))

    errors.init_app(app)
    metrics.init_app(app, stats, {"edgegen": __version__, "onnxruntime": onnxrt.version()},
                     sensors_root=cfg.power_root)
    auth.init_app(app)  # after metrics: refused requests are counted too
    health.init_app(app)  # after auth: "loading" to a client with a key only
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(playground.bp)
    app.register_blueprint(companion.bp)
    if load:
        load_models(app)
    return app


def load_models(app: Flask) -> int:
    """Load and warm the bundles of the run state's set (the configured ones without a run
    state) into `app`'s empty registry, and report them: to the run state (what /admin/reload
    waits for), to /metrics; return that set's epoch. Raises BundleError, ConfigError or
    SensorError; a reload is refused meanwhile (edge_app/runtime.py)."""
    state = of(app)
    current = _run_state(state.run_state)  # again: a reload may have come since create_app
    paths = tuple(current["bundles"] or state.config.bundles)
    log.info("loading %d model(s) from %s ...", len(paths), ", ".join(map(str, paths)))
    swap = state.models.load(state.config, paths, first=True)
    state.epoch = current["epoch"]  # this worker serves that epoch's set
    if state.run_state is not None:
        state.run_state.ack(current["epoch"], True, None, swap.models)
    for model in state.models.models.values():
        state.metrics.model_info.labels(*admin.model_labels(model)).set(1)
    log.info("loaded %d model(s) in %.2f s: %s", len(swap.models), swap.seconds,
             ", ".join(swap.models))
    return current["epoch"]


def _run_state(run_state: RunState | None) -> dict:
    """The bundle set to serve ("bundles" None: the configured one) and its epoch."""
    return run_state.read() if run_state is not None else {"epoch": 0, "bundles": None}
