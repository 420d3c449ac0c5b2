"""API errors and the one place that turns them into JSON.

Handlers raise; they never build error bodies themselves. Every error body has the shape
``{"error": {"message", "type", "code"}}`` (OpenAI's and llama.cpp's convention).
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code


class InvalidRequest(ApiError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class ModelNotFound(ApiError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class NotReady(ApiError):
    status, type, code = 503, "unavailable_error", "not_ready"

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Loading(ApiError):
    """The models are still loading: a worker answers from its start (edge_app/serve.py), and
    until its models are in, readiness and every route that needs one say so."""
    status, type, code = 503, "unavailable_error", "loading"

    def __init__(self, loaded: int, total: int, retry_after_s: int = 2, stage: str = ""):
        said = f"Loading models: {loaded} of {total} loaded" if total else "Loading models"
        super().__init__(f"{said}; {stage}" if stage else said,
                         headers={"Retry-After": str(retry_after_s)})


class Overloaded(ApiError):
    """Admission refused: every slot busy and the queue full, or the queue wait ran out."""
    status, type, code = 503, "unavailable_error", "server_busy"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Unauthorized(ApiError):
    status, type, code = 401, "authentication_error", "invalid_api_key"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="edgegen"'})


class Conflict(ApiError):
    status, type, code = 409, "invalid_request_error", "conflict"


class Forbidden(ApiError):
    status, type, code = 403, "permission_error", "forbidden"


class TooManyRequests(ApiError):
    """Too many wrong keys from one client address: it waits before any key is checked."""
    status, type, code = 429, "rate_limit_error", "too_many_failed_keys"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def error_body(status: int, message: str, type_: str, code: str, param: str | None = None):
    error = {"message": message, "type": type_, "code": code}
    if param is not None:
        error["param"] = param
    response = jsonify({"error": error})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = error_body(exc.status, exc.message, exc.type, exc.code, exc.param)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # 404 for unknown routes, 405 wrong method, 413 body too large, 415 ...: JSON too.
        code = (exc.name or "error").lower().replace(" ", "_")
        type_ = "invalid_request_error" if 400 <= (exc.code or 500) < 500 else "server_error"
        response = error_body(exc.code or 500, exc.description or exc.name, type_, code)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # A bug, not bad input: log the traceback on the server, never send it to the client.
        log.exception("unhandled error")
        return error_body(500, "internal server error", "server_error", "internal_error")
