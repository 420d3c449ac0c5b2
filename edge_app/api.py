"""OpenAI-style generation routes: GET /v1/models, POST /v1/images/generations."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from .errors import InvalidRequest, ModelNotFound, NotReady
from .latent import MAX_SEED
from .png import encode_png, to_uint8
from .runtime import ImageModel, ModelRegistry

bp = Blueprint("api", __name__, url_prefix="/v1")

_IMAGE_FIELDS = ("model", "prompt", "n", "size", "response_format", "seed", "user")
_MAX_PROMPT_CHARS = 4000


def _models() -> ModelRegistry:
    registry: ModelRegistry = current_app.extensions["edgegen.models"]
    if not registry.ready:
        raise NotReady("Loading model")
    return registry


def _json_object() -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _int_field(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer, got {type(value).__name__}", param=name)
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return value


def _str_field(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string, got {type(value).__name__}", param=name)
    return value


@dataclass(frozen=True)
class ImageRequest:
    model: ImageModel
    n: int
    seed: int

    @classmethod
    def parse(cls, body: dict[str, Any], registry: ModelRegistry, max_n: int) -> "ImageRequest":
        unknown = sorted(set(body) - set(_IMAGE_FIELDS))
        if unknown:
            raise InvalidRequest(f"unknown parameter(s) {unknown}; accepted: {list(_IMAGE_FIELDS)}",
                                 param=unknown[0])
        model = _pick_model(registry, _str_field(body, "model"))
        prompt = _str_field(body, "prompt")  # unconditional generators do not use it
        if prompt is not None and len(prompt) > _MAX_PROMPT_CHARS:
            raise InvalidRequest(f"'prompt' is longer than {_MAX_PROMPT_CHARS} characters",
                                 param="prompt")
        _str_field(body, "user")
        fmt = _str_field(body, "response_format") or "b64_json"
        if fmt != "b64_json":
            raise InvalidRequest(f"'response_format' {fmt!r} is not supported: an offline device "
                                 f"has no image URLs; use 'b64_json'", param="response_format")
        image = model.bundle.manifest.generation.image
        size = _str_field(body, "size")
        if size is not None and size != f"{image.width}x{image.height}":
            raise InvalidRequest(f"model '{model.name}' generates {image.width}x{image.height} "
                                 f"images only, got size {size!r}", param="size")
        n = _int_field(body, "n", 1, 1, max_n)
        seed = _int_field(body, "seed", None, 0, MAX_SEED)
        return cls(model, n, secrets.randbelow(MAX_SEED + 1) if seed is None else seed)


def _pick_model(registry: ModelRegistry, name: str | None) -> ImageModel:
    if name is None:
        if len(registry.models) != 1:
            raise InvalidRequest(f"'model' is required when several models are loaded: "
                                 f"{sorted(registry.models)}", param="model")
        (model,) = registry.models.values()
    else:
        model = registry.models.get(name)
        if model is None:
            raise ModelNotFound(f"model {name!r} is not loaded; available: "
                                f"{sorted(registry.models)}", param="model")
    g.edgegen_model = model.name
    return model


@bp.get("/models")
def list_models():
    """The loaded models with their manifest facts."""
    registry: ModelRegistry = current_app.extensions["edgegen.models"]
    return jsonify({"object": "list", "data": [_describe(m) for m in registry.models.values()]})


def _describe(model: ImageModel) -> dict[str, Any]:
    m = model.bundle.manifest
    image = m.generation.image
    return {
        "id": m.name, "object": "model", "owned_by": "edgegen",
        "created": int(m.provenance.get("created_unix", 0)),
        "task": m.task, "family": m.family, "precision": m.precision, "runtime": model.runtime,
        "image": {"channels": image.channels, "height": image.height, "width": image.width},
        "latent": {"dim": m.generation.latent.dim, "rng": m.generation.latent.rng},
        "techniques": [{"name": t.name, "params": t.params} for t in m.techniques],
        "metrics": m.metrics,
    }


@bp.post("/images/generations")
def generate_images():
    """Generate `n` PNG images from seeded latents (OpenAI images API, b64_json only)."""
    registry = _models()
    req = ImageRequest.parse(_json_object(), registry,
                             current_app.extensions["edgegen.config"].max_images_per_request)
    started = time.monotonic()  # the power sampler's clock
    pixels = to_uint8(req.model.generate(req.n, req.seed),
                      req.model.bundle.manifest.generation.image.value_range)
    generated = time.monotonic()
    data = [{"b64_json": base64.b64encode(encode_png(img)).decode("ascii")} for img in pixels]
    encoded = time.monotonic()
    current_app.extensions["edgegen.metrics"].images.labels(req.model.name).inc(req.n)
    energy = current_app.extensions["edgegen.power"].request_energy(
        started, encoded, req.model.name, request.url_rule.rule)
    return jsonify({
        "created": int(time.time()), "model": req.model.name, "seed": req.seed,
        "output_format": "png", "data": data,
        "usage": {"images": req.n},
        "timings": {"generate_ms": round((generated - started) * 1e3, 3),
                    "encode_ms": round((encoded - generated) * 1e3, 3), **energy},
    })
