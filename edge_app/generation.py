"""The task-specific `generation` section of a manifest: what a runtime needs to drive the graph
(an image generator's latent and image shape; a text decoder's tokenizer and KV-cache layout),
checked against the graph's declared inputs and outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .schema import BundleError, GraphSpec, Obj, graph_spec

# How a seed becomes a latent vector; edge_app/latent.py implements each name exactly, so that
# every runtime (server, benchmark, browser companion) draws the same latent for the same seed.
LATENT_RNGS = ("splitmix64-box-muller-v1",)
# Upper bounds on what a manifest may declare: the server allocates from these (a declared
# latent of 20M once made warm-up allocate ~840 MB before the graph refused it).
MAX_LATENT_DIM = 1 << 16
MAX_IMAGE_SIDE = 4096
MAX_VOCAB = 1 << 20
MAX_CONTEXT = 1 << 21
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
MAX_EOS_IDS = 16
MAX_CHAT_TEMPLATE_CHARS = 64 * 1024
MAX_SPECIAL_TOKEN_CHARS = 256


@dataclass(frozen=True)
class LatentSpec:
    dim: int
    distribution: str  # "normal": standard normal, one vector per image
    rng: str  # one of LATENT_RNGS


@dataclass(frozen=True)
class ImageSpec:
    channels: int  # 1 (grayscale) or 3 (RGB), channel-first in the graph output
    height: int
    width: int
    value_range: tuple[float, float]  # what the graph outputs; mapped linearly to 0..255


@dataclass(frozen=True)
class ImageGeneration:
    latent: LatentSpec
    image: ImageSpec
    latent_input: str  # graph input that takes the (batch, dim) latent
    image_output: str  # graph output that gives (batch, C, H, W)


@dataclass(frozen=True)
class CacheLayer:
    heads: int  # heads of this layer's cache tensors: the KV heads (head pruning makes layers
    # differ; grouped-query attention keeps fewer KV heads than query heads)
    key_input: str  # graph input "past" key, (batch, heads, past, head_dim)
    value_input: str
    key_output: str  # graph output "present" key, (batch, heads, past + seq, head_dim)
    value_output: str
    query_heads: int | None = None  # attention (query) heads, when they differ from `heads`


@dataclass(frozen=True)
class TextGeneration:
    """A decoder with a KV cache: feed the prompt once, then one token per step.

    Inputs: token ids (batch, seq), the positions whose logits are wanted (keep) and one past
    key and value per layer. Outputs: logits (batch, keep, vocab) and the present keys and
    values, which are the next step's past. An empty past (length 0) starts a sequence; the
    graph derives positions from the past length, so a sequence must not exceed
    context_length tokens.
    """

    tokenizer_file: str  # HF `tokenizers` JSON, listed in files
    vocab_size: int
    context_length: int
    eos_token_id: int
    bos_token_id: int
    head_dim: int
    cache_dtype: str
    layers: tuple[CacheLayer, ...]
    input_ids: str
    logits_index: str
    logits_output: str
    # Generation stops at any of these (a chat model ends a turn with its own token); the first
    # is eos_token_id, which older bundles state alone.
    eos_token_ids: tuple[int, ...] = ()
    # The chat template (Jinja2 source, as in tokenizer_config.json): plain data, parsed to check
    # its syntax when the bundle loads, rendered only in a sandbox and never executed here.
    chat_template: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)  # e.g. bos_token, eos_token
    # How positions are encoded: {"kind": "learned"} (GPT-2) or {"kind": "rope", "theta": ...,
    # "scaling": {...} or null} (the Llama family); the graph computes them itself.
    positions: dict[str, Any] = field(default_factory=dict)
    architecture: str = ""  # the transformers model type it was exported from (gpt2, llama, ...)

    def __post_init__(self):
        if not self.eos_token_ids:
            object.__setattr__(self, "eos_token_ids", (self.eos_token_id,))


def _image_generation(obj: Obj, graph: GraphSpec) -> ImageGeneration:
    latent_obj, image_obj = obj.obj("latent"), obj.obj("image")
    latent = LatentSpec(
        dim=latent_obj.positive("dim", MAX_LATENT_DIM),
        distribution=latent_obj.get("distribution", str, choices=("normal",)),
        rng=latent_obj.get("rng", str, choices=LATENT_RNGS),
    )
    lo_hi = image_obj.get("value_range", list)
    if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) for v in lo_hi) or lo_hi[0] >= lo_hi[1]:
        raise BundleError(
            f"{obj.origin}: 'generation.image.value_range' must be [low, high] with low < high, "
            f"both finite numbers, got {lo_hi!r}"
        )
    image = ImageSpec(
        channels=image_obj.get("channels", int, choices=(1, 3)),
        height=image_obj.positive("height", MAX_IMAGE_SIDE),
        width=image_obj.positive("width", MAX_IMAGE_SIDE),
        value_range=(float(lo_hi[0]), float(lo_hi[1])),
    )
    gen = ImageGeneration(
        latent, image, obj.get("latent_input", str), obj.get("image_output", str)
    )
    by_name = {t.name: t for t in graph.inputs + graph.outputs}
    for role, name, want in (
        ("latent_input", gen.latent_input, (latent.dim,)),
        ("image_output", gen.image_output, (image.channels, image.height, image.width)),
    ):
        spec = by_name.get(name)
        if spec is None:
            raise BundleError(f"{obj.origin}: 'generation.{role}' names '{name}', "
                              f"which is not in graph inputs/outputs")
        if tuple(spec.shape[1:]) != want:
            raise BundleError(f"{obj.origin}: graph tensor '{name}' has shape {list(spec.shape)}, "
                              f"but generation declares [batch, {', '.join(map(str, want))}]")
    return gen


def _text_generation(obj: Obj, graph: GraphSpec) -> TextGeneration:
    cache = obj.obj("kv_cache")
    layers = tuple(
        CacheLayer(heads=o.positive("heads", MAX_HEADS), key_input=o.get("key_input", str),
                   value_input=o.get("value_input", str), key_output=o.get("key_output", str),
                   value_output=o.get("value_output", str), query_heads=_query_heads(o))
        for o in (Obj(v, w, obj.origin) for w, v in cache.items("layers")))
    if not layers:
        raise BundleError(f"{obj.origin}: 'generation.kv_cache.layers' must not be empty")
    eos = obj.get("eos_token_id", int)
    eos_ids = obj.get("eos_token_ids", list, default=[eos])
    if not eos_ids or len(eos_ids) > MAX_EOS_IDS or eos_ids[0] != eos or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in eos_ids):
        raise BundleError(f"{obj.origin}: 'generation.eos_token_ids' must be 1 to {MAX_EOS_IDS} "
                          f"token ids starting with eos_token_id ({eos}), got {eos_ids!r}"[:300])
    gen = TextGeneration(
        tokenizer_file=obj.get("tokenizer_file", str),
        vocab_size=obj.positive("vocab_size", MAX_VOCAB),
        context_length=obj.positive("context_length", MAX_CONTEXT),
        eos_token_id=eos,
        bos_token_id=obj.get("bos_token_id", int),
        head_dim=cache.positive("head_dim", MAX_HEAD_DIM),
        cache_dtype=cache.get("dtype", str, choices=("float32", "float16")),
        layers=layers,
        input_ids=obj.get("input_ids", str),
        logits_index=obj.get("logits_index", str),
        logits_output=obj.get("logits_output", str),
        eos_token_ids=tuple(eos_ids),
        chat_template=_chat_template(obj),
        special_tokens=_special_tokens(obj),
        positions=_positions(obj),
        architecture=obj.get("architecture", str, default=""),
    )
    for key, value in (("eos_token_id", gen.eos_token_id), ("bos_token_id", gen.bos_token_id),
                       *((f"eos_token_ids[{i}]", t) for i, t in enumerate(gen.eos_token_ids))):
        if not 0 <= value < gen.vocab_size:
            raise BundleError(f"{obj.origin}: 'generation.{key}' must be within the vocabulary "
                              f"(0..{gen.vocab_size - 1}), got {value}")
    ins = {t.name: t for t in graph.inputs}
    outs = {t.name: t for t in graph.outputs}

    def expect(table, kind, role, name, want):
        spec = table.get(name)
        if spec is None:
            raise BundleError(f"{obj.origin}: 'generation.{role}' names '{name}', which is not a "
                              f"graph {kind}")
        if want is not None and (len(spec.shape) != len(want) or any(
                w is not None and d != w for d, w in zip(spec.shape, want))):
            shown = ["*" if w is None else w for w in want]
            raise BundleError(f"{obj.origin}: graph {kind} '{name}' has shape {list(spec.shape)}, "
                              f"generation declares {shown}")

    expect(ins, "input", "input_ids", gen.input_ids, (None, None))
    expect(ins, "input", "logits_index", gen.logits_index, (None,))
    expect(outs, "output", "logits_output", gen.logits_output, (None, None, gen.vocab_size))
    for i, layer in enumerate(layers):
        want = (None, layer.heads, None, gen.head_dim)
        for table, kind, role in ((ins, "input", "key_input"), (ins, "input", "value_input"),
                                  (outs, "output", "key_output"),
                                  (outs, "output", "value_output")):
            expect(table, kind, f"kv_cache.layers[{i}].{role}", getattr(layer, role), want)
    return gen


def _query_heads(layer: Obj) -> int | None:
    heads = layer.get("query_heads", int, default=None)
    if heads is not None and (not 0 < heads <= MAX_HEADS or heads % layer.value["heads"]):
        raise BundleError(f"{layer.origin}: '{layer.where}.query_heads' must be a positive "
                          f"multiple of its heads ({layer.value['heads']}), got {heads}")
    return heads


def _chat_template(obj: Obj) -> str | None:
    """The template's source, compiled as the chat route will render it (edge_app/chat.py), to
    refuse a broken one at load; nothing is rendered here (that happens per request, in the
    sandbox)."""
    source = obj.get("chat_template", str, default=None)
    if source is None:
        return None
    if not source.strip() or len(source) > MAX_CHAT_TEMPLATE_CHARS:
        raise BundleError(f"{obj.origin}: 'generation.chat_template' must be a non-empty "
                          f"template of at most {MAX_CHAT_TEMPLATE_CHARS} characters")
    from .chat import ChatTemplateError, check

    try:
        check(source)
    except ChatTemplateError as exc:
        raise BundleError(f"{obj.origin}: 'generation.chat_template' is not a valid Jinja2 "
                          f"template: {exc}") from None
    return source


def _special_tokens(obj: Obj) -> dict[str, str]:
    tokens = obj.obj("special_tokens", default={})
    out = {}
    for key in tokens.value:
        value = tokens.get(key, str)
        if not key.isidentifier() or len(value) > MAX_SPECIAL_TOKEN_CHARS:
            raise BundleError(f"{obj.origin}: 'generation.special_tokens' maps names (such as "
                              f"bos_token) to token strings of at most "
                              f"{MAX_SPECIAL_TOKEN_CHARS} characters, got {key!r}"[:300])
        out[key] = value
    return out


def _positions(obj: Obj) -> dict[str, Any]:
    if "positions" not in obj.value:
        return {}
    pos = obj.obj("positions")
    kind = pos.get("kind", str, choices=("learned", "rope"))
    if kind == "learned":
        return {"kind": kind}
    theta = pos.get("theta", (int, float))
    if not math.isfinite(theta) or theta <= 0:
        raise BundleError(f"{obj.origin}: 'generation.positions.theta' must be a positive "
                          f"number, got {theta!r}")
    scaling = pos.get("scaling", (dict, type(None)), default=None)
    return {"kind": kind, "theta": float(theta), "scaling": scaling}


def parse_text_generation(generation: dict, graph: dict, origin: str = "generation") -> TextGeneration:
    """A manifest's `generation` and `graph` sections -> TextGeneration (validated), for tools
    that run a decoder graph before its bundle exists (export checks, probes)."""
    return _text_generation(Obj(generation, "generation", origin), graph_spec(Obj(graph, "graph", origin)))


# Per-task generation parsers.
GENERATION_PARSERS: dict[str, Callable[[Obj, GraphSpec], Any]] = {
    "image-generation": _image_generation,
    "text-generation": _text_generation,
}
