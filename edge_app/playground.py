"""GET / (a page to try the models in a browser) and GET /openapi.json.

The page is one self-contained HTML file (edge_app/static/playground.html): no scripts, fonts
or styles from elsewhere, since a device serves it offline. It streams text completions and
shows generated images with their timings and energy.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, current_app, jsonify

from .openapi import document

bp = Blueprint("playground", __name__)
_PAGE = resources.files(__package__).joinpath("static/playground.html")


@bp.get("/")
def page():
    return Response(_PAGE.read_bytes(), content_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                             "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})


@bp.get("/openapi.json")
def openapi():
    ext = current_app.extensions
    return jsonify(document(ext["edgegen.config"], ext["edgegen.models"],
                            bool(ext["edgegen.api_keys"]), bool(ext["edgegen.admin_keys"])))
