"""The Flask application factory."""

from __future__ import annotations

from typing import Any, Mapping

import onnxruntime
from flask import Flask
from prometheus_client import CollectorRegistry

from . import __version__, api, completions, errors, health, metrics  # noqa: F401 (routes)
from .config import Config, load_config
from .power.service import PowerService
from .runtime import ModelRegistry


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build the server: config, error mapping, metrics, models (loaded and warmed), routes.

    Raises BundleError, ConfigError or SensorError when a bundle, the config or the named power
    sensor cannot be used.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False

    stats = metrics.Metrics(CollectorRegistry())
    registry = ModelRegistry()
    registry.load(cfg)
    for model in registry.models.values():
        m = model.bundle.manifest
        stats.model_info.labels(m.name, m.family, m.task, m.precision, model.runtime,
                                str(m.schema_version)).set(1)
    app.extensions.update({"edgegen.config": cfg, "edgegen.models": registry,
                           "edgegen.metrics": stats,
                           "edgegen.power": PowerService(cfg, stats)})

    errors.init_app(app)
    metrics.init_app(app, stats, {"edgegen": __version__, "onnxruntime": onnxruntime.__version__})
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    return app
