"""The task-specific `generation` section of a manifest: what a runtime needs to drive the graph
(an image generator's latent and image shape; a text decoder's tokenizer and KV-cache layout),
checked against the graph's declared inputs and outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    heads: int  # attention heads kept in this layer (head pruning makes layers differ)
    key_input: str  # graph input "past" key, (batch, heads, past, head_dim)
    value_input: str
    key_output: str  # graph output "present" key, (batch, heads, past + seq, head_dim)
    value_output: str


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
                   value_output=o.get("value_output", str))
        for o in (Obj(v, w, obj.origin) for w, v in cache.items("layers")))
    if not layers:
        raise BundleError(f"{obj.origin}: 'generation.kv_cache.layers' must not be empty")
    gen = TextGeneration(
        tokenizer_file=obj.get("tokenizer_file", str),
        vocab_size=obj.positive("vocab_size", MAX_VOCAB),
        context_length=obj.positive("context_length", MAX_CONTEXT),
        eos_token_id=obj.get("eos_token_id", int),
        bos_token_id=obj.get("bos_token_id", int),
        head_dim=cache.positive("head_dim", MAX_HEAD_DIM),
        cache_dtype=cache.get("dtype", str, choices=("float32", "float16")),
        layers=layers,
        input_ids=obj.get("input_ids", str),
        logits_index=obj.get("logits_index", str),
        logits_output=obj.get("logits_output", str),
    )
    for key in ("eos_token_id", "bos_token_id"):
        if not 0 <= getattr(gen, key) < gen.vocab_size:
            raise BundleError(f"{obj.origin}: 'generation.{key}' must be within the vocabulary "
                              f"(0..{gen.vocab_size - 1}), got {getattr(gen, key)}")
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


def parse_text_generation(generation: dict, graph: dict, origin: str = "generation") -> TextGeneration:
    """A manifest's `generation` and `graph` sections -> TextGeneration (validated), for tools
    that run a decoder graph before its bundle exists (export checks, probes)."""
    return _text_generation(Obj(generation, "generation", origin), graph_spec(Obj(graph, "graph", origin)))


# Per-task generation parsers.
GENERATION_PARSERS: dict[str, Callable[[Obj, GraphSpec], Any]] = {
    "image-generation": _image_generation,
    "text-generation": _text_generation,
}
