"""The Flask application factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import onnxruntime
from flask import Flask
from prometheus_client import CollectorRegistry

from . import __version__, admin, api, auth, completions, errors, health, metrics  # noqa: F401
from . import chat_api, companion, playground  # noqa: F401 (routes)
from .admission import Admission
from .auth import Throttle
from .config import Config, load_config
from .power.service import PowerService
from .runtime import ModelRegistry
from .runstate import RunState
from .state import KEY, ServerState
from .system import device_facts


def create_app(config: Config | Mapping[str, Any] | None = None,
               config_loader: Callable[[], Config] | None = None,
               run_state: RunState | None = None) -> Flask:
    """Build the server: config, error mapping, metrics, models (loaded and warmed), routes.

    `config_loader` gives a fresh Config on reload (the CLI re-reads its file and environment);
    by default a reload keeps this config. `run_state` (a gunicorn worker's) holds the bundle
    set the workers serve, which a reload over HTTP may have changed. Raises BundleError,
    ConfigError or SensorError when a bundle, the config or the named power sensor cannot be
    used.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False

    stats = metrics.Metrics(CollectorRegistry())
    registry = ModelRegistry()
    state = run_state.read() if run_state is not None else {"epoch": 0, "bundles": None}
    registry.load(cfg, tuple(state["bundles"]) if state["bundles"] else None)
    if run_state is not None:  # this worker serves that epoch's set (what /admin/reload waits for)
        run_state.ack(state["epoch"], True, None, sorted(registry.models))
    for model in registry.models.values():
        stats.model_info.labels(*admin.model_labels(model)).set(1)
    stats.device_info.labels(**device_facts(Path("/"), cfg.device_class,
                                            onnxruntime.get_available_providers())).set(1)
    api_keys = cfg.all_api_keys()
    app.extensions[KEY] = ServerState(
        config=cfg, config_loader=config_loader or (lambda: cfg), models=registry,
        metrics=stats, run_state=run_state, epoch=state["epoch"],
        admission=Admission(cfg.max_concurrent, cfg.max_queue, cfg.queue_timeout_s, stats),
        power=PowerService(cfg, stats), throttle=Throttle(cfg.auth_failures_per_minute),
        api_keys=api_keys, admin_keys=cfg.all_admin_keys(api_keys))

    errors.init_app(app)
    metrics.init_app(app, stats, {"edgegen": __version__, "onnxruntime": onnxruntime.__version__},
                     sensors_root=cfg.power_root)
    auth.init_app(app)  # after metrics: refused requests are counted too
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(playground.bp)
    app.register_blueprint(companion.bp)
    return app
