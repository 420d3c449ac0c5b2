"""OpenAI-style generation routes: GET /v1/models, POST /v1/images/generations (and, in
completions.py, POST /v1/completions)."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, g, jsonify, request

from .errors import InvalidRequest, ModelNotFound, NotReady
from .latent import MAX_SEED
from .limits import json_body
from .png import encode_png, to_uint8
from .runtime import ImageModel, ModelRegistry
from .state import current

bp = Blueprint("api", __name__, url_prefix="/v1")

_IMAGE_FIELDS = ("model", "prompt", "n", "size", "response_format", "seed", "user")
MAX_IMAGE_PROMPT_CHARS = 4000
MAX_BATCH_VALUES = 1 << 26  # floats one request may make a generator output (256 MB)


def models() -> ModelRegistry:
    registry: ModelRegistry = current().models
    if not registry.ready:
        raise NotReady("Loading model")
    return registry


def json_object() -> dict[str, Any]:
    return json_body()  # the cheap limits (edge_app/limits.py) first


def int_field(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, float) and value.is_integer():  # JSON Schema: 3.0 is an integer
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer, got {type(value).__name__}", param=name)
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return value


def str_field(body: dict, name: str) -> str | None:
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
        model = pick_model(registry, str_field(body, "model"), "image-generation")
        prompt = str_field(body, "prompt")  # unconditional generators do not use it
        if prompt is not None and len(prompt) > MAX_IMAGE_PROMPT_CHARS:
            raise InvalidRequest(f"'prompt' is longer than {MAX_IMAGE_PROMPT_CHARS} characters",
                                 param="prompt")
        str_field(body, "user")
        fmt = str_field(body, "response_format")
        fmt = "b64_json" if fmt is None else fmt
        if fmt != "b64_json":
            raise InvalidRequest(f"'response_format' {fmt!r} is not supported: an offline device "
                                 f"has no image URLs; use 'b64_json'", param="response_format")
        image = model.bundle.manifest.generation.image
        size = str_field(body, "size")
        if size is not None and size != f"{image.width}x{image.height}":
            raise InvalidRequest(f"model '{model.name}' generates {image.width}x{image.height} "
                                 f"images only, got size {size!r}", param="size")
        n = int_field(body, "n", 1, 1, max_n)
        per_image = image.channels * image.height * image.width
        if n * per_image > MAX_BATCH_VALUES:
            raise InvalidRequest(f"{n} images of {image.width}x{image.height} exceed what one "
                                 f"request may generate here; ask for at most "
                                 f"{max(1, MAX_BATCH_VALUES // per_image)}", param="n")
        seed = int_field(body, "seed", None, 0, MAX_SEED)
        return cls(model, n, secrets.randbelow(MAX_SEED + 1) if seed is None else seed)


ROUTE_OF_TASK = {"image-generation": "/v1/images/generations", "text-generation": "/v1/completions"}


def pick_model(registry: ModelRegistry, name: str | None, task: str):
    """The named model (or the only model of `task` when none is named), which must do `task`."""
    if name is None:
        candidates = [m for m in registry.models.values() if m.bundle.manifest.task == task]
        if len(candidates) != 1:
            raise InvalidRequest(f"'model' is required: {len(candidates)} {task} models are "
                                 f"loaded ({sorted(m.name for m in candidates)})", param="model")
        (model,) = candidates
    else:
        model = registry.models.get(name)
        if model is None:
            raise ModelNotFound(f"model {name!r} is not loaded; available: "
                                f"{sorted(registry.models)}", param="model")
        other = model.bundle.manifest.task
        if other != task:
            raise InvalidRequest(f"model {name!r} is a {other} model; use "
                                 f"{ROUTE_OF_TASK[other]}", param="model")
    g.edgegen_model = model.name
    return model


@bp.get("/models")
def list_models():
    """The loaded models with their manifest facts."""
    registry: ModelRegistry = current().models
    return jsonify({"object": "list", "data": [_describe(m) for m in registry.models.values()]})


def _describe(model) -> dict[str, Any]:
    m = model.bundle.manifest
    gen = m.generation
    if m.task == "text-generation":
        facts = {"text": {"vocab_size": gen.vocab_size, "context_length": gen.context_length,
                          "layers": len(gen.layers),
                          "heads_per_layer": [layer.heads for layer in gen.layers],
                          "eos_token_id": gen.eos_token_id}}
    else:
        facts = {"image": {"channels": gen.image.channels, "height": gen.image.height,
                           "width": gen.image.width},
                 "latent": {"dim": gen.latent.dim, "rng": gen.latent.rng}}
    return {
        "id": m.name, "object": "model", "owned_by": "edgegen",
        "created": int(m.provenance.get("created_unix", 0)),
        "task": m.task, "family": m.family, "precision": m.precision, "runtime": model.runtime,
        "providers": model.session.get_providers(),
        **facts,
        "techniques": [{"name": t.name, "params": t.params} for t in m.techniques],
        "metrics": m.metrics,
    }


@bp.post("/images/generations")
def generate_images():
    """Generate `n` PNG images from seeded latents (OpenAI images API, b64_json only)."""
    registry = models()
    req = ImageRequest.parse(json_object(), registry,
                             current().config.max_images_per_request)
    with current().admission.slot() as waited:
        started = time.monotonic()  # the power sampler's clock
        pixels = to_uint8(req.model.generate(req.n, req.seed),
                          req.model.bundle.manifest.generation.image.value_range)
        generated = time.monotonic()
    data = [{"b64_json": base64.b64encode(encode_png(img)).decode("ascii")} for img in pixels]
    encoded = time.monotonic()
    current().metrics.images.labels(req.model.name).inc(req.n)
    energy = current().power.request_energy(
        started, encoded, req.model.name, request.url_rule.rule)
    return jsonify({
        "created": int(time.time()), "model": req.model.name, "seed": req.seed,
        "output_format": "png", "data": data,
        "usage": {"images": req.n},
        "timings": {"queue_ms": round(waited * 1e3, 3),
                    "generate_ms": round((generated - started) * 1e3, 3),
                    "encode_ms": round((encoded - generated) * 1e3, 3), **energy},
    })
