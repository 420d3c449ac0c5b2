"""The companion page (GET /companion/) and the read-only bundle files it runs (GET /bundles/).

The page (edge_app/static/companion/) runs the bundles itself, in the browser, with
onnxruntime-web's WebAssembly backend: any phone can use it from a browser, and the Android
companion APK (android/) ships the same files as its assets. Both lay the files out alike, so
the page's relative URLs work in either place::

    /companion/index.html, *.js, ort*.mjs, ort*.wasm     (APK: /assets/companion/...)
    /bundles/index.json                                  (APK: /assets/bundles/index.json)
    /bundles/<name>/manifest.json, model.onnx, ...       (APK: /assets/bundles/<name>/...)

onnxruntime-web is not in this repository, nor is @huggingface/jinja (the page's chat-template
engine): android/fetch-web-deps.sh downloads the pinned npm packages, checks their integrity and
keeps the three files the wasm backend needs and Jinja's one module under
build/web-deps/onnxruntime-web (or `companion_ort_dir`). Bundle files are served only when
their name is in the loaded manifest's `files`, so no path reaches outside a bundle; each is
opened as load_bundle verified it (a regular file, not through a symbolic link, of the size
the manifest records), so a file swapped for a link after the check is not followed either.
"""

from __future__ import annotations

import gzip
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from flask import Blueprint, Response, jsonify, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from .bundle import MANIFEST, Bundle, BundleError, open_regular
from .errors import ApiError, ModelNotFound
from .state import current

log = logging.getLogger(__name__)

bp = Blueprint("companion", __name__)
PAGE_DIR = resources.files(__package__).joinpath("static/companion")
# What onnxruntime-web's wasm backend loads (single-threaded or not, 1.30 ships one SIMD build).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
JINJA_FILES = ("huggingface-jinja.mjs",)  # @huggingface/jinja's ESM build: chat templates
WEB_DEPS = ORT_FILES + JINJA_FILES  # fetched, not in the repository; one directory holds them
DEFAULT_ORT_DIR = Path(__file__).resolve().parent.parent / "build" / "web-deps" / "onnxruntime-web"
FETCH_HINT = "run android/fetch-web-deps.sh (needs npm), or set companion_ort_dir"
MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".json": "application/json", ".wasm": "application/wasm"}
# The page runs wasm ('wasm-unsafe-eval') and pushes to a Pushgateway the user names (connect-src).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' "
       "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self' http: https:")


class FileNotServed(ApiError):
    status, type, code = 404, "invalid_request_error", "file_not_found"


def page_files() -> dict[str, Any]:
    """The page's own files by name (the package's static/companion directory)."""
    return {f.name: f for f in PAGE_DIR.iterdir() if f.is_file()}


def ort_dir(configured: str = "") -> Path:
    # absolute: Flask's send_file takes a relative path as relative to the package
    return Path(os.path.abspath(configured)) if configured else DEFAULT_ORT_DIR


def bundle_index(bundles: Iterable[Bundle]) -> dict[str, Any]:
    """What the page lists (GET /bundles/index.json; the APK writes the same file)."""
    return {"bundles": [{"name": b.manifest.name, "task": b.manifest.task,
                         "family": b.manifest.family, "precision": b.manifest.precision,
                         # a chat template: the page chats with it (renders the conversation)
                         "chat": getattr(b.manifest.generation, "chat_template", None) is not None,
                         "files": [MANIFEST, *b.manifest.files]} for b in bundles]}


def _file(path, name: str) -> Response:
    mime = MIME.get(Path(name).suffix, "application/octet-stream")
    if isinstance(path, Path):
        response = send_file(path, mimetype=mime, conditional=True, max_age=0)
    else:  # a packaged resource (zip-safe)
        response = Response(path.read_bytes(), content_type=mime)
    if name == "index.html":
        response.headers["Content-Security-Policy"] = CSP
    return response


def _gzipped(packed: Path, name: str) -> Response:
    """A file stored gzip-compressed: sent as is with Content-Encoding to clients that accept
    gzip (every browser), inflated for the others."""
    mime = MIME.get(Path(name).suffix, "application/octet-stream")
    data = packed.read_bytes()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = Response(data, content_type=mime)
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(gzip.decompress(data), content_type=mime)
    response.headers["Vary"] = "Accept-Encoding"
    return response


@bp.get("/companion/")
def page():
    """The companion page (GET /companion redirects here, so relative URLs resolve)."""
    return _file(page_files()["index.html"], "index.html")


@bp.get("/companion/<name>")
def page_file(name: str):
    """One file of the page: its scripts, onnxruntime-web's module and wasm, or Jinja's module."""
    own = page_files()
    if name in own:
        return _file(own[name], name)
    if name in WEB_DEPS:
        path = ort_dir(current().config.companion_ort_dir) / name
        if path.is_file():
            return _file(path, name)
        packed = path.with_name(name + ".gz")
        if packed.is_file():  # device images keep them gzipped (the Pi image's size budget)
            return _gzipped(packed, name)
        # The directory goes to the log, not to the (public) client.
        log.warning("companion: web dependency %s is not in %s: %s", name, path.parent,
                    FETCH_HINT)
        package = "onnxruntime-web" if name in ORT_FILES else "@huggingface/jinja"
        raise FileNotServed(f"{package} file {name!r} is not installed on this server: "
                            f"{FETCH_HINT}")
    raise FileNotServed(f"no companion file {name!r}; the page has "
                        f"{sorted([*own, *WEB_DEPS])}")


def _bundle(name: str) -> Bundle:
    model = current().models.models.get(name)
    if model is None:
        raise ModelNotFound(f"no bundle {name!r} is loaded; loaded: "
                            f"{sorted(current().models.models)}")
    return model.bundle


@bp.get("/bundles/index.json")
def bundles():
    """The loaded bundles and their files, for the companion page."""
    models = current().models.models.values()
    return jsonify(bundle_index(m.bundle for m in models))


@bp.get("/bundles/<name>/<file>")
def bundle_file(name: str, file: str):
    """One file of a loaded bundle: its manifest or a file the manifest lists."""
    bundle = _bundle(name)
    entry = bundle.manifest.files.get(file)
    if file != MANIFEST and entry is None:
        raise FileNotServed(f"bundle {name!r} has no file {file!r}; its files: "
                            f"{[MANIFEST, *bundle.manifest.files]}")
    try:
        f = open_regular(bundle.path / file, f"bundle {name!r}: file {file!r}")
    except (BundleError, OSError) as exc:
        log.error("companion: %s", exc)
        raise FileNotServed(f"bundle {name!r}: file {file!r} is not served (changed since the "
                            f"bundle was loaded; see the server log)") from None
    size = os.fstat(f.fileno()).st_size
    if entry is not None and size != entry.size:
        f.close()
        log.error("companion: bundle %s: file %s has size %d, manifest says %d", name, file,
                  size, entry.size)
        raise FileNotServed(f"bundle {name!r}: file {file!r} changed since the bundle was "
                            f"loaded; reload it")
    response = send_file(f, mimetype=MIME.get(Path(file).suffix, "application/octet-stream"),
                         etag=entry.sha256 if entry else False, max_age=0)
    response.content_length = size
    try:
        return response.make_conditional(request.environ, accept_ranges=True,
                                         complete_length=size)
    except RequestedRangeNotSatisfiable:
        f.close()
        raise
