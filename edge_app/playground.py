"""GET / (a page to try the models in a browser) and GET /openapi.json.

The page is one self-contained HTML file (edge_app/static/playground.html): no scripts, fonts
or styles from elsewhere, since a device serves it offline. It streams text completions and
shows generated images with their timings and energy.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, jsonify

from .openapi import document
from .state import current

bp = Blueprint("playground", __name__)
_PAGE = resources.files(__package__).joinpath("static/playground.html")


@bp.get("/")
def page():
    return Response(_PAGE.read_bytes(), content_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                             "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})


@bp.get("/openapi.json")
def openapi():
    state = current()
    return jsonify(document(state.config, state.models, bool(state.api_keys),
                            bool(state.admin_keys)))
