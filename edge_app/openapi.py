"""The OpenAPI 3.1 document of a running server, built from its config and loaded models.

Built per request, so it always matches what is served now: caps (max_tokens, n, body size)
come from the config, `model` enumerates the loaded models of each task, `size` the image
shapes, and security appears only when API keys are configured. A test checks that every
route of the app is documented and vice versa; schemathesis fuzzes the routes from it.
"""

from __future__ import annotations

import re
from typing import Any

from . import __version__
from .api import MAX_IMAGE_PROMPT_CHARS
from .auth import protected
from .completions import MAX_PROMPT_CHARS, MAX_TEXT_SEED
from .config import Config
from .latent import MAX_SEED


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


def _model_field(task: str, names: list[str]) -> dict:
    """`model`: one of the loaded models of `task`, or null (the only one of its task)."""
    model = {"type": ["string", "null"], "description": f"A loaded {task} model (optional "
             f"when exactly one is loaded)."}
    if names:
        model["enum"] = names + [None]
    return model


def _completion_request(cfg: Config, names: list[str], context: int) -> dict:
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            "model": _model_field("text-generation", names),
            "prompt": {"oneOf": [{"type": "string", "maxLength": MAX_PROMPT_CHARS},
                                 {"type": "array", "minItems": 1, "maxItems": 1,
                                  "items": {"type": "string", "maxLength": MAX_PROMPT_CHARS}}],
                       "description": "Prompt text; prompt tokens + max_tokens must fit the "
                                      "model's context length."},
            "max_tokens": {"type": "integer", "minimum": 1, "default": 16,
                           "maximum": min(cfg.max_tokens_per_request, max(1, context - 1))},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2,
                            "default": 1, "description": "0 is greedy."},
            "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1,
                      "default": 1},
            "top_k": {"type": "integer", "minimum": 0, "default": 0,
                      "description": "0: no cut; at most the vocabulary size."},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_TEXT_SEED},
            "stop": {"oneOf": [{"type": "string", "minLength": 1},
                               {"type": "array", "maxItems": 4,
                                "items": {"type": "string", "minLength": 1}},
                               {"type": "null"}]},
            "stream": {"type": "boolean", "default": False,
                       "description": "Server-sent events ending with `data: [DONE]`."},
            "stream_options": {"type": ["object", "null"], "additionalProperties": False,
                               "properties": {"include_usage": {"type": "boolean"}}},
            "n": {"type": ["integer", "null"], "enum": [1, None]},
            "echo": {"type": ["boolean", "null"], "enum": [False, None]},
            "logprobs": {"type": "null"},
            "presence_penalty": {"type": ["number", "null"], "enum": [0, None]},
            "frequency_penalty": {"type": ["number", "null"], "enum": [0, None]},
            "user": {"type": ["string", "null"]},
        },
    }


def _image_request(cfg: Config, names: list[str], sizes: list[str]) -> dict:
    size = {"type": ["string", "null"], "description": "Must be the model's own WxH."}
    if sizes:
        size["enum"] = sizes + [None]
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            "model": _model_field("image-generation", names),
            "prompt": {"type": ["string", "null"], "maxLength": MAX_IMAGE_PROMPT_CHARS,
                       "description": "Ignored: the generators are unconditional."},
            "n": {"type": "integer", "minimum": 1, "maximum": cfg.max_images_per_request,
                  "default": 1},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED,
                     "description": "Same seed, same images."},
            "size": size,
            "response_format": {"type": ["string", "null"], "enum": ["b64_json", None]},
            "user": {"type": ["string", "null"]},
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
    "Completion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage",
                                       "timings"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "text_completion"},
            "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["text", "index", "finish_reason"],
                "properties": {"text": {"type": "string"}, "index": {"type": "integer"},
                               "logprobs": {"type": "null"},
                               "finish_reason": {"enum": ["stop", "length"]}}}},
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
    },
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
    by_task: dict[str, list] = {"text-generation": [], "image-generation": []}
    for model in registry.models.values():
        by_task[model.bundle.manifest.task].append(model)
    text = sorted(m.name for m in by_task["text-generation"])
    images = sorted(m.name for m in by_task["image-generation"])
    context = max((m.spec.context_length for m in by_task["text-generation"]), default=2)
    sizes = sorted({f"{m.bundle.manifest.generation.image.width}x"
                    f"{m.bundle.manifest.generation.image.height}"
                    for m in by_task["image-generation"]})
    json_body = lambda schema: {"required": True, "content": {  # noqa: E731
        "application/json": {"schema": schema}}}
    ok = lambda description, ref: {"description": description, "content": {  # noqa: E731
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    generation_errors = {"400": _BAD, "404": _UNKNOWN_MODEL, "413": _TOO_LARGE, "503": _BUSY}
    paths: dict[str, Any] = {
        "/v1/completions": {"post": {
            "operationId": "createCompletion", "summary": "Complete a prompt (OpenAI-compatible).",
            "requestBody": json_body(_completion_request(cfg, text, context)),
            "responses": {"200": {
                "description": "The completion, or with `stream: true` server-sent events "
                               "(`data: {chunk}` lines, the last chunk with finish_reason and "
                               "timings, then `data: [DONE]`).",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
                    "text/event-stream": {"schema": _SSE_EVENT}}},
                **generation_errors}}},
        "/v1/images/generations": {"post": {
            "operationId": "createImage",
            "summary": "Generate PNG images (OpenAI-style, b64_json).",
            "requestBody": json_body(_image_request(cfg, images, sizes)),
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
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"bundles": {"type": "array", "minItems": 1,
                                           "items": {"type": "string", "minLength": 1},
                                           "description": "Bundle directories, by name "
                                           "under bundle_root or by path inside it."}}}}}},
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
