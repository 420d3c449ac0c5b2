"""TensorRT through ONNX Runtime, from a bundle's manifest: the explicit optimization profile
that covers every shape the server feeds, the engine cache per bundle and TensorRT version,
and which graphs get INT8 kernels. edge_app/runtime.py hands these to the session."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

from .bundle import Bundle
from .config import Config

log = logging.getLogger(__name__)

TRT = "TensorrtExecutionProvider"
# libnvinfer's sonames, newest first (JetPack 6: TensorRT 10, JetPack 5 and 4: 8).
NVINFER = ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")


@functools.cache
def tensorrt_version() -> str:
    """The TensorRT library ONNX Runtime's TensorRT provider would load ("10.3.0"), from
    libnvinfer's getInferLibVersion(); "" where there is none (no GPU image)."""
    for name in NVINFER:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        return trt_version_string(int(lib.getInferLibVersion()))
    return ""


def trt_version_string(code: int) -> str:
    """NV_TENSORRT_VERSION as a version: 100300 -> 10.3.0 (TensorRT 10 counts the major in
    ten-thousands), 8602 -> 8.6.2 (TensorRT 8 in thousands)."""
    major, rest = divmod(code, 10000) if code >= 10000 else divmod(code, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def trt_cache_dir(configured: str = "") -> Path:
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgegen" / "tensorrt"


def engine_dir(bundle: Bundle, config: Config | None) -> Path:
    """Where this bundle's TensorRT engines are cached: one directory per TensorRT version and
    model file (its sha256), so a new bundle or a JetPack upgrade builds anew and never loads an
    engine made for something else; the rest of the cache is left alone."""
    sha = bundle.manifest.files[bundle.manifest.model_file].sha256
    return (trt_cache_dir(config.trt_cache_dir if config else "")
            / f"trt-{tensorrt_version() or 'unknown'}" / f"{bundle.manifest.name}-{sha[:16]}")


def is_qdq(bundle: Bundle) -> bool:
    """A graph quantized with QuantizeLinear/DequantizeLinear pairs on calibrated activations
    (static INT8): the only kind TensorRT builds INT8 kernels for. Dynamic INT8
    (MatMulInteger, DynamicQuantizeLinear) and 4-bit MatMulNBits are not TensorRT ops: those
    nodes run on CUDA or the CPU."""
    return any(t.name == "quantize" and t.params.get("mode") == "static-int8"
               for t in bundle.manifest.techniques)


def trt_profile(bundle: Bundle, config: Config | None) -> dict[str, str]:
    """TensorRT's explicit optimization profile (trt_profile_min/opt/max_shapes) for every graph
    input, from the manifest: one profile covering every shape the server will feed, so the
    engine is built once, at warm-up, not again whenever a shape leaves the range TensorRT
    guessed from the first run (a KV-cache decoder's sequence axes change every token).

    Text: batch 1 (the server decodes one sequence per run), a prompt of 1 to context_length
    tokens, a past of 0 (the prefill) to context_length - 1; optimized for one new token on a
    half-full cache. Images: a batch of 1 to max_images_per_request, optimized for 1.
    Returns {} (TensorRT's implicit profiles) when an input has an axis the manifest does not
    name in these terms, with a warning."""
    manifest = bundle.manifest
    if manifest.task == "text-generation":
        ctx = manifest.generation.context_length
        axes = {"batch": (1, 1, 1), "sequence": (1, 1, ctx), "past": (0, ctx // 2, ctx - 1),
                "keep": (1, 1, ctx)}
    else:
        cap = config.max_images_per_request if config else Config().max_images_per_request
        axes = {"batch": (1, 1, cap)}
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for spec in manifest.graph.inputs:
        dims = []
        for dim in spec.shape:
            if isinstance(dim, int):
                dims.append((dim, dim, dim))
            elif dim in axes:
                dims.append(axes[dim])
            else:
                log.warning("%s: input %s has axis %r, which has no TensorRT profile range; "
                            "TensorRT picks its own (and may rebuild engines as shapes change)",
                            manifest.name, spec.name, dim)
                return {}
        for i, which in enumerate(("min", "opt", "max")):
            shapes[which].append(f"{spec.name}:" + "x".join(str(d[i]) for d in dims))
    return {f"trt_profile_{which}_shapes": ",".join(v) for which, v in shapes.items()}
