"""Liveness and readiness, for probes (compose healthcheck, Ansible, Kubernetes), and the
answer of every route that needs a model while the models load.

A gunicorn worker answers from its start and loads its models in the background
(edge_app/serve.py): until they are in, /health is 200, /ready and the routes that need a model
are 503 "loading" with Retry-After, before any body is read (a body names a model that is not
loaded yet: a 400 or 404 would be wrong). /v1/models is one of them: the set appears whole in
one swap (edge_app/runtime.py), so until then it would list none, which a client would take
for a server without models.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, request

from .errors import Loading, NotReady
from .state import current

bp = Blueprint("health", __name__)

# What needs the models: the API (/v1/...) and the companion's bundle files.
NEEDS_MODELS = ("api", "companion.bundles", "companion.bundle_file")


def loading(registry) -> Loading:
    return Loading(*registry.progress, stage=registry.stage)


@bp.get("/health")
def health():
    """Live: the process answers. Public, cheap, touches no model."""
    if not current().models.ready:
        return jsonify({"status": "ok", "models": "loading"})
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """Ready: every configured model is loaded and warmed, and the queue has room (a load
    balancer then sends work to a device that can take it)."""
    registry = current().models
    if not registry.ready:
        raise loading(registry)
    admission = current().admission
    if admission.saturated:
        raise NotReady("Saturated: every generation slot is busy and the queue is full",
                       admission.retry_after())
    return jsonify({"status": "ready", "models": sorted(registry.models),
                    "admission": admission.describe()})


def init_app(app: Flask) -> None:
    """503 "loading" from the routes that need a model until the models are in (register after
    the auth checks: a client without a key learns nothing more)."""

    @app.before_request
    def _until_loaded():
        registry = current().models
        if not registry.ready and (request.blueprint in NEEDS_MODELS
                                   or request.endpoint in NEEDS_MODELS):
            raise loading(registry)
