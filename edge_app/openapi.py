"""The OpenAPI 3.1 document of a running server, built from its config and loaded models.

Built per request, so it always matches what is served now: the request bodies are the very
shapes the routes validate with (edge_app/shapes.py), their caps (max_tokens, n) from the
config, `model` enumerating the loaded models of each task (chat: those with a template),
`size` the image shapes; security appears only when API keys are configured. A test checks
that every route of the app is documented and vice versa; schemathesis fuzzes the routes from
it.
"""

from __future__ import annotations

import re
from typing import Any

from . import __version__
from .admin import RELOAD
from .api import IMAGE
from .auth import protected
from .chat_api import CHAT
from .completions import COMPLETION
from .config import Config
from .shapes import Limits


def _error(description: str, headers: dict | None = None) -> dict:
    out = {"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_BUSY = _error("Every generation slot is busy and the queue is full (or the queue wait ran "
               "out), or the models are still loading.", _RETRY)
_BAD = _error("Invalid request: the message names the parameter.")
_UNKNOWN_MODEL = _error("The named model is not loaded.")
_TOO_LARGE = _error("The request body is larger than the configured limit.")

# One server-sent event (the schema of an event-stream item before OpenAPI 3.2's itemSchema).
_SSE_EVENT = {"type": "object", "required": ["data"],
              "properties": {"data": {"type": "string", "description": "A completion chunk "
                                      "(JSON; the last one has finish_reason and timings), "
                                      "then the literal [DONE]."}}}

_TIMINGS = {
    "type": "object",
    "properties": {
        "queue_ms": {"type": "number"},
        "energy_j": {"type": ["number", "null"],
                     "description": "Energy above the idle baseline over the request window "
                                    "(null with energy_note when the device has no sensor)."},
        "energy_note": {"type": "string"},
        "power_sensor": {"type": "string"},
    },
}


def _text_answer(kind: str, choice: dict) -> dict:
    """A whole text answer: its choice, usage, and the timings every text route reports."""
    return {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage",
                                       "timings"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": kind},
            "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": {"type": "object",
                      "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                      "properties": {k: {"type": "integer"} for k in
                                     ("prompt_tokens", "completion_tokens", "total_tokens")}},
            "timings": {**_TIMINGS, "properties": {
                **_TIMINGS["properties"],
                "prompt_tokens": {"type": "integer"}, "generated_tokens": {"type": "integer"},
                "time_to_first_token_ms": {"type": "number"}, "decode_ms": {"type": "number"},
                "tokens_per_second": {"type": ["number", "null"]},
                "stopped_by": {"const": "request_timeout"}}},
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "code": {"type": "string"}, "param": {"type": "string"}}}},
    },
    "Completion": _text_answer("text_completion", {
        "type": "object", "required": ["text", "index", "finish_reason"],
        "properties": {"text": {"type": "string"}, "index": {"type": "integer"},
                       "logprobs": {"type": "null"},
                       "finish_reason": {"enum": ["stop", "length"]}}}),
    "ChatCompletion": _text_answer("chat.completion", {
        "type": "object", "required": ["index", "message", "finish_reason"],
        "properties": {"index": {"type": "integer"}, "logprobs": {"type": "null"},
                       "finish_reason": {"enum": ["stop", "length"]},
                       "message": {"type": "object", "required": ["role", "content"],
                                   "properties": {"role": {"const": "assistant"},
                                                  "content": {"type": "string"}}}}}),
    "Images": {
        "type": "object", "required": ["created", "model", "seed", "data", "usage", "timings"],
        "properties": {
            "created": {"type": "integer"}, "model": {"type": "string"},
            "seed": {"type": "integer"}, "output_format": {"const": "png"},
            "data": {"type": "array", "items": {
                "type": "object", "required": ["b64_json"],
                "properties": {"b64_json": {"type": "string", "contentEncoding": "base64",
                                            "contentMediaType": "image/png"}}}},
            "usage": {"type": "object", "properties": {"images": {"type": "integer"}}},
            "timings": {**_TIMINGS, "properties": {
                **_TIMINGS["properties"], "generate_ms": {"type": "number"},
                "encode_ms": {"type": "number"}}},
        },
    },
    "Models": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "object", "task", "family", "precision", "runtime"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "task": {"enum": ["text-generation", "image-generation"]},
                           "family": {"type": "string"}, "precision": {"type": "string"},
                           "runtime": {"type": "string"},
                           "providers": {"type": "array", "items": {"type": "string"}},
                           "placement": {"type": "object",
                                         "additionalProperties": {"type": "integer"}},
                           "techniques": {"type": "array"}, "metrics": {"type": "object"}}}}},
    },
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}}},
    "Reload": {
        "type": "object", "required": ["status", "models", "loaded", "unchanged"],
        "properties": {"status": {"const": "reloaded"},
                       **{k: {"type": "array", "items": {"type": "string"}}
                          for k in ("models", "loaded", "unchanged")},
                       "seconds": {"type": "number"},
                       "workers": {"type": "integer", "description": "Workers now serving "
                                   "the set (each gunicorn worker reloads)."}},
    },
    "Reloading": {"type": "object", "required": ["status", "message"],
                  "properties": {"status": {"const": "reloading"},
                                 "message": {"type": "string"}}},
}


def _streamed(description: str, ref: str) -> dict:
    return {"description": f"{description}, or with `stream: true` server-sent events (`data: "
                           f"{{chunk}}` lines, the last with finish_reason and timings, then "
                           f"`data: [DONE]`).",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}},
                        "text/event-stream": {"schema": _SSE_EVENT}}}


def _plain(description: str, kind: str, *media_types: str) -> dict:
    return {"description": description,
            "content": {m: {"schema": {"type": kind}} for m in media_types}}


def _path_params(*names: str) -> list[dict]:
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in names]


# The companion page and the bundle files it runs in the browser (edge_app/companion.py).
_COMPANION = {
    "/companion/": {"get": {
        "operationId": "companionPage",
        "summary": "The companion page: runs the bundles in the browser (onnxruntime-web).",
        "responses": {"200": _plain("HTML.", "string", "text/html")}}},
    "/companion/{name}": {"get": {
        "operationId": "companionFile", "summary": "A script or wasm file of the companion page.",
        "parameters": _path_params("name"),
        "responses": {"200": _plain("The file.", "string", "text/javascript", "application/wasm",
                                    "text/html"),
                      "404": _error("No such file, or onnxruntime-web or @huggingface/jinja "
                                    "is not installed (the message says how to fetch them).")}}},
    "/bundles/index.json": {"get": {
        "operationId": "listBundles",
        "summary": "The loaded bundles, their files, and whether each has a chat template.",
        "responses": {"200": _plain("The bundles.", "object", "application/json")}}},
    "/bundles/{name}/{file}": {"get": {
        "operationId": "bundleFile",
        "summary": "A loaded bundle's manifest.json or a file its manifest lists.",
        "parameters": _path_params("name", "file"),
        "responses": {"200": {"description": "The file.", "content": {
                          "application/json": {"schema": {"type": "object"}},
                          "application/octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}}},
                      "404": _error("No such bundle loaded, or the bundle has no such file.")}}},
}


def document(cfg: Config, registry, keys: bool, admin_keys: bool = False) -> dict[str, Any]:
    lim = Limits.of(cfg, registry)
    json_body = lambda schema: {"required": True, "content": {  # noqa: E731
        "application/json": {"schema": schema}}}
    ok = lambda description, ref: {"description": description, "content": {  # noqa: E731
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    generation_errors = {"400": _BAD, "404": _UNKNOWN_MODEL, "413": _TOO_LARGE, "503": _BUSY}
    paths: dict[str, Any] = {
        "/v1/completions": {"post": {
            "operationId": "createCompletion", "summary": "Complete a prompt (OpenAI-compatible).",
            "requestBody": json_body(COMPLETION.schema(lim)),
            "responses": {"200": _streamed("The completion", "Completion"),
                          **generation_errors}}},
        "/v1/chat/completions": {"post": {
            "operationId": "createChatCompletion",
            "summary": "Answer a conversation with the model's chat template (OpenAI-compatible); "
                       "a model without a template gets a 400 that points to /v1/completions.",
            "requestBody": json_body(CHAT.schema(lim)),
            "responses": {"200": _streamed("The assistant's reply (chat.completion.chunk "
                                           "events: the role first, then content deltas)",
                                           "ChatCompletion"),
                          **generation_errors}}},
        "/v1/images/generations": {"post": {
            "operationId": "createImage",
            "summary": "Generate PNG images (OpenAI-style, b64_json).",
            "requestBody": json_body(IMAGE.schema(lim)),
            "responses": {"200": ok("The images, base64 PNG.", "Images"), **generation_errors}}},
        "/v1/models": {"get": {
            "operationId": "listModels", "summary": "Loaded models with their manifest facts.",
            "responses": {"200": ok("The models.", "Models")}}},
        "/admin/reload": {"post": {
            "operationId": "reload",
            "summary": "Load the configured (or the given) bundles, validated and warmed, then "
                       "swap, in every worker; on failure the previous models keep serving. "
                       "Admin keys only (or, with none set, loopback clients only); "
                       "Content-Type: application/json; bundles from under bundle_root.",
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": RELOAD.schema(lim)}}},
            "responses": {"200": ok("The models now served.", "Reload"),
                          "202": ok("Still loading after reload_timeout_s; it goes on.",
                                    "Reloading"),
                          "400": _error("A bundle is invalid or tampered, or outside "
                                        "bundle_root; nothing changed."),
                          "403": _error("Not a loopback client, and no admin key is set."),
                          "409": _error("Another reload is running."), "413": _TOO_LARGE,
                          "415": _error("The body is not application/json."),
                          "500": _error("Reloaded here, but not in every worker.")}}},
        "/health": {"get": {"operationId": "health", "summary": "Liveness (public).",
                            "responses": {"200": ok("The process answers.", "Status")}}},
        "/ready": {"get": {"operationId": "ready",
                           "summary": "Readiness: models loaded and warmed, queue not full.",
                           "responses": {"200": ok("Ready.", "Status"), "503": _BUSY}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics.",
                             "responses": {"200": _plain("Prometheus text format.", "string",
                                                         "text/plain",
                                                         "application/openmetrics-text")}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.",
                                  "responses": {"200": _plain("OpenAPI 3.1.", "object",
                                                              "application/json")}}},
        "/": {"get": {"operationId": "playground", "summary": "The playground page.",
                      "responses": {"200": _plain("HTML, no external assets.", "string",
                                                  "text/html")}}},
        **_COMPANION,
    }
    for path, item in paths.items():
        for op in item.values():
            admin = path.startswith("/admin/") and admin_keys
            if admin or keys and protected(re.sub(r"\{(\w+)\}", r"<\1>", path),
                                           cfg.metrics_auth):
                op["security"] = [{"bearer": []}]
                op["responses"]["401"] = _error(f"Missing or invalid "
                                                f"{'admin' if admin else 'API'} key.", {
                    "WWW-Authenticate": {"schema": {"type": "string"}}})
                op["responses"]["429"] = _error("Too many wrong keys from this address: "
                                                "wait Retry-After seconds.", _RETRY)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "EdgeGen device API", "version": __version__,
                 "description": "Offline text and image generation on an edge device, with "
                                "latency, energy and memory measured per request."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
    if keys or admin_keys:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
