"""Liveness and readiness, for probes (compose healthchecks, Ansible, Kubernetes)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .errors import NotReady
from .state import current

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """Live: the process answers. Public, cheap, touches no model."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """Ready: every configured model is loaded and warmed, and the queue has room (a load
    balancer then sends work to a device that can take it)."""
    registry = current().models
    if not registry.ready:
        raise NotReady("Loading model")
    admission = current().admission
    if admission.saturated:
        raise NotReady("Saturated: every generation slot is busy and the queue is full",
                       admission.retry_after())
    return jsonify({"status": "ready", "models": sorted(registry.models),
                    "admission": admission.describe()})
