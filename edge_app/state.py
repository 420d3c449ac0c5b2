"""The one typed object a server keeps per app: what every route and hook reads.

Stored once at `app.extensions["edgegen"]`; `current()` gives it inside a request, `of(app)`
outside one (reload threads, gunicorn hooks). A reload replaces `api_keys`, `admin_keys` and
`epoch` in place; the other members live as long as the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from flask import Flask, current_app

if TYPE_CHECKING:  # the modules below import this one
    from .admission import Admission
    from .auth import Throttle
    from .config import Config
    from .metrics import Metrics
    from .power.service import PowerService
    from .runstate import RunState
    from .runtime import ModelRegistry

KEY = "edgegen"


@dataclass
class ServerState:
    config: "Config"
    config_loader: "Callable[[], Config]"  # a fresh Config on reload
    models: "ModelRegistry"
    metrics: "Metrics"
    admission: "Admission"
    power: "PowerService"
    run_state: "RunState | None"  # the bundle set gunicorn's workers share (None: one process)
    epoch: int  # which of run_state's sets this worker serves
    throttle: "Throttle"
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()


def of(app: Flask) -> ServerState:
    return app.extensions[KEY]


def current() -> ServerState:
    """The state of the app handling this request."""
    return current_app.extensions[KEY]


def find(wsgi) -> ServerState | None:
    """The state of a WSGI callable that is an EdgeGen app, else None (a front in tests may
    wrap any WSGI app)."""
    return getattr(wsgi, "extensions", {}).get(KEY)
