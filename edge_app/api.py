"""OpenAI-style generation routes: GET /v1/models, POST /v1/images/generations (and, in
completions.py, POST /v1/completions)."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, g, jsonify, request

from .errors import InvalidRequest, ModelNotFound
from .latent import MAX_SEED
from .limits import json_body
from .png import encode_png, to_uint8
from .runtime import ImageModel, ModelRegistry
from .shapes import Int, Limits, Only, Shape, Str
from .state import current

bp = Blueprint("api", __name__, url_prefix="/v1")

MAX_IMAGE_PROMPT_CHARS = 4000
MAX_BATCH_VALUES = 1 << 26  # floats one request may make a generator output (256 MB)


def json_object() -> dict[str, Any]:
    return json_body()  # the cheap limits (edge_app/limits.py) first


def model_field(task: str) -> Str:
    """`model` of a request body: one of the loaded models of `task` (or "chat"), optional when
    exactly one is loaded (pick_model)."""
    return Str(enum=lambda lim: lim.models.get(task, ()),
               description=f"A loaded {'chat-capable text-generation' if task == 'chat' else task}"
                           f" model (optional when exactly one is loaded).")


IMAGE = Shape({
    "model": model_field("image-generation"),
    "prompt": Str(MAX_IMAGE_PROMPT_CHARS, description="Ignored: the generators are "
                                                      "unconditional."),
    "n": Int(1, lambda lim: lim.max_images, 1),
    "seed": Int(0, MAX_SEED, description="Same seed, same images."),
    "size": Str(enum=lambda lim: lim.sizes, description="Must be the model's own WxH."),
    "response_format": Only({"type": "string", "enum": ["b64_json"]}, lambda v: v == "b64_json",
                            "an offline device has no image URLs; use 'b64_json'"),
    "user": Str(description="Accepted and ignored."),
})


@dataclass(frozen=True)
class ImageRequest:
    model: ImageModel
    n: int
    seed: int

    @classmethod
    def parse(cls, body: dict[str, Any], registry: ModelRegistry, lim: Limits) -> "ImageRequest":
        model = pick_model(registry, IMAGE.one(body, "model", lim), "image-generation")
        body = IMAGE.parse(body, lim)
        image = model.bundle.manifest.generation.image
        size = body["size"]
        if size is not None and size != f"{image.width}x{image.height}":
            raise InvalidRequest(f"model '{model.name}' generates {image.width}x{image.height} "
                                 f"images only, got size {size!r}", param="size")
        n = body["n"]
        per_image = image.channels * image.height * image.width
        if n * per_image > MAX_BATCH_VALUES:
            raise InvalidRequest(f"{n} images of {image.width}x{image.height} exceed what one "
                                 f"request may generate here; ask for at most "
                                 f"{max(1, MAX_BATCH_VALUES // per_image)}", param="n")
        seed = body["seed"]
        return cls(model, n, secrets.randbelow(MAX_SEED + 1) if seed is None else seed)


ROUTE_OF_TASK = {"image-generation": "/v1/images/generations", "text-generation": "/v1/completions"}


def can_chat(model) -> bool:
    return model.bundle.manifest.task == "text-generation" and bool(model.spec.chat_template)


def pick_model(registry: ModelRegistry, name: str | None, task: str, chat: bool = False):
    """The named model (or the only model of `task` when none is named), which must do `task`
    (and carry a chat template, for `chat`)."""
    if name is None:
        candidates = [m for m in registry.models.values() if m.bundle.manifest.task == task
                      and (not chat or can_chat(m))]
        if len(candidates) != 1:
            kind = "chat-capable (with a chat template)" if chat else task
            raise InvalidRequest(f"'model' is required: {len(candidates)} {kind} models are "
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
    if chat and not can_chat(model):
        raise InvalidRequest(f"model {model.name!r} has no chat template in its bundle, so it "
                             f"cannot chat; send it a plain prompt at /v1/completions",
                             param="model", code="model_has_no_chat_template")
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
                          "eos_token_id": gen.eos_token_id,
                          "eos_token_ids": list(gen.eos_token_ids),
                          "chat": can_chat(model), "architecture": gen.architecture or None},
                 "endpoints": ["/v1/completions"] + (["/v1/chat/completions"]
                                                     if can_chat(model) else [])}
    else:
        facts = {"image": {"channels": gen.image.channels, "height": gen.image.height,
                           "width": gen.image.width},
                 "latent": {"dim": gen.latent.dim, "rng": gen.latent.rng},
                 "endpoints": ["/v1/images/generations"]}
    return {
        "id": m.name, "object": "model", "owned_by": "edgegen",
        "created": int(m.provenance.get("created_unix", 0)),
        "task": m.task, "family": m.family, "precision": m.precision, "runtime": model.runtime,
        "providers": model.session.get_providers(),
        # nodes each provider ran at warm-up; TensorRT counts a fused subgraph as one
        "placement": model.placement or {},
        **facts,
        "techniques": [{"name": t.name, "params": t.params} for t in m.techniques],
        "metrics": m.metrics,
    }


@bp.post("/images/generations")
def generate_images():
    """Generate `n` PNG images from seeded latents (OpenAI images API, b64_json only)."""
    state = current()  # models loaded: edge_app/health.py answers 503 "loading" until then
    registry = state.models
    req = ImageRequest.parse(json_object(), registry, Limits.of(state.config, registry))
    with state.admission.slot() as waited:
        started = time.monotonic()  # the power sampler's clock
        pixels = to_uint8(req.model.generate(req.n, req.seed),
                          req.model.bundle.manifest.generation.image.value_range)
        generated = time.monotonic()
    data = [{"b64_json": base64.b64encode(encode_png(img)).decode("ascii")} for img in pixels]
    encoded = time.monotonic()
    state.metrics.images.labels(req.model.name).inc(req.n)
    energy = state.power.request_energy(
        started, encoded, req.model.name, request.url_rule.rule)
    return jsonify({
        "created": int(time.time()), "model": req.model.name, "seed": req.seed,
        "output_format": "png", "data": data,
        "usage": {"images": req.n},
        "timings": {"queue_ms": round(waited * 1e3, 3),
                    "generate_ms": round((generated - started) * 1e3, 3),
                    "encode_ms": round((encoded - generated) * 1e3, 3), **energy},
    })
