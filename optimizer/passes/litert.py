"""The image generator as a LiteRT (TFLite) graph: FP32, FP16 weights, or full-integer INT8.

Converted from the PyTorch model with litert-torch (torch.export, then LiteRT's converter; no
TensorFlow), quantized with ai-edge-quantizer, and validated against PyTorch in LiteRT's own
interpreter (XNNPACK, as the server runs it): FP32 and FP16 within `atol` of PyTorch, INT8 at a
PSNR of at least `min_psnr_db` on seeded latents. A graph that fails gets no bundle.

- fp16: weights stored in float16 and dequantized once at load (compute stays float32; Arm
  CPUs with FP16 arithmetic may run it in half precision through XNNPACK).
- int8: weights int8 per output channel, activations int8 per tensor, calibrated on the
  generator's own input distribution (latents from the bundle's latent RNG: seed, size and
  sha256 recorded), int8 at the graph's edges; the server quantizes and dequantizes there.

Graphs run one item (the converter cannot carry a dynamic batch through the generator's
reshape); the server loops over a batch. Both exact variants of the generator are converted,
the ConvTranspose graph and its sub-pixel rewrite (Conv + DepthToSpace, optimizer/passes/
subpixel.py), and with `graph: auto` the faster one at batch 1 on this machine is kept, the
timings recorded. A variant that cannot be converted or quantized is recorded with the reason
(ai-edge-quantizer 0.10 cannot quantize TRANSPOSE_CONV's bias: INT8 takes the sub-pixel graph).
Text models are not converted: litert-torch lowers a KV-cache decoder only through its own
generative layer rewrites (litert_torch.generative), not the kit's graphs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import statistics
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edge_app.latent import normal_latents
from edge_app.litert import LiteRTError, LiteRTSession, litert_version

from ..errors import ExportError, RecipeError

STAGE = "graph"
FAMILIES = ("dcgan", "beta-vae")
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("auto", "convtranspose", "subpixel")
ATOL = {"fp32": 1e-4, "fp16": 1e-2}  # max |LiteRT - PyTorch| on the Tanh range [-1, 1]
# ai-edge-quantizer's float casting: float16 weights, dequantized at load, float compute
FP16_RECIPE = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                              "compute_precision": "FLOAT", "explicit_dequantize": True}}]


@dataclass(frozen=True)
class Config:
    precision: str = "fp32"  # fp32 | fp16 | int8
    graph: str = "auto"  # auto (time both variants, keep the faster) or a variant's name
    atol: float | None = None  # fp32/fp16: max |LiteRT - PyTorch|; None: ATOL[precision]
    min_psnr_db: float = 20.0  # int8: PSNR of LiteRT's images against PyTorch's
    validation_samples: int = 16
    calibration_samples: int = 256
    calibration_seed: int = 0
    timing_repeats: int = 30  # timed batch-1 runs per variant when graph is auto

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {list(GRAPHS)}, got {self.graph!r}")
        if self.calibration_samples < 16 or self.validation_samples < 1 or \
                self.timing_repeats < 1:
            raise ValueError("calibration_samples must be >= 16, validation_samples and "
                             "timing_repeats >= 1")


def check(cfg: Config, family) -> None:
    """The converter stack is there, before any training (it is not in the locked extras)."""
    missing = [m for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise RecipeError(f"pass 'litert' needs the LiteRT converter stack ({', '.join(missing)} "
                          f"missing): `pip install --no-deps -r litert-build.txt` and "
                          f"edgegen[litert], as `make venv` does")


def params(cfg: Config) -> dict:
    """Recorded by `run` itself: resolved, and for the precision only."""
    return {}


class _Named(torch.nn.Module):
    """The generator with the manifest's tensor names: input `z`, output `image`."""

    def __init__(self, gen: torch.nn.Module):
        super().__init__()
        self.gen = gen

    def forward(self, z: torch.Tensor) -> dict:
        return {"image": self.gen(z)}


@contextlib.contextmanager
def _quiet(sink: io.StringIO):
    """The converter's and quantizer's progress lines and deprecation chatter, not ours."""
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def convert(gen: torch.nn.Module, latent_dim: int, path: Path) -> Path:
    """The FP32 `.tflite` of a generator at batch 1 (signature serving_default: z -> image)."""
    import litert_torch

    chatter = io.StringIO()  # the converter reports each stage on stdout
    try:
        with _quiet(chatter):
            litert_torch.convert(_Named(gen.eval()).eval(),
                                 sample_kwargs={"z": torch.zeros(1, latent_dim)}).export(str(path))
    except Exception as exc:  # the converter raises many types
        raise ExportError(f"litert-torch could not convert {type(gen).__name__}: "
                          f"{_first_line(exc)}") from None
    return path


def quantize(src: Path, dst: Path, precision: str, calibration: np.ndarray | None) -> Path:
    """FP16 weights, or full-integer INT8 calibrated on `calibration` (N, latent) latents."""
    from ai_edge_quantizer import quantizer, recipe

    chatter = io.StringIO()
    try:
        with _quiet(chatter):
            q = quantizer.Quantizer(str(src))
            if precision == "fp16":
                q.load_quantization_recipe(FP16_RECIPE)
                result = q.quantize()
            else:
                q.load_quantization_recipe(recipe.static_wi8_ai8())
                feeds = [{"z": row[None]} for row in calibration]
                result = q.quantize(q.calibrate({"serving_default": feeds}))
            result.export_model(str(dst), overwrite=True)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer could not make {precision} from {src.name}: "
                          f"{_first_line(exc)}") from None
    return dst


def validate(gen: torch.nn.Module, path: Path, latents: np.ndarray, cfg: Config) -> dict:
    """LiteRT's images against PyTorch's on `latents`; ExportError past the tolerance."""
    try:
        (actual,) = LiteRTSession(path, threads=1).run(["image"], {"z": latents})
    except LiteRTError as exc:
        raise ExportError(f"LiteRT cannot run {path.name}: {exc}") from None
    with torch.no_grad():
        expected = gen(torch.from_numpy(latents)).numpy()
    diff = float(np.max(np.abs(actual - expected)))
    mse = float(np.mean((actual.astype(np.float64) - expected) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # value range 2
    if cfg.precision == "int8":
        if not psnr >= cfg.min_psnr_db:
            raise ExportError(f"{path.name}: PSNR {psnr:.1f} dB against PyTorch is under "
                              f"min_psnr_db {cfg.min_psnr_db:g}")
        return {"psnr_db": round(psnr, 2), "max_abs_diff": diff, "min_psnr_db": cfg.min_psnr_db}
    atol = cfg.atol if cfg.atol is not None else ATOL[cfg.precision]
    if not diff <= atol:  # also catches NaN
        raise ExportError(f"{path.name}: max |LiteRT - PyTorch| = {diff:.3g} exceeds atol "
                          f"{atol:g}")
    return {"max_abs_diff": diff, "atol": atol, "psnr_db": round(min(psnr, 999.0), 2)}


def batch1_ms(path: Path, latent_dim: int, repeats: int) -> float:
    """Median milliseconds of one image in LiteRT (one thread per core, as the server runs)."""
    session = LiteRTSession(path)
    z = normal_latents(1, 1, latent_dim)
    session.run(["image"], {"z": z})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(["image"], {"z": z})
        times.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(times), 4)


def run(subject, cfg: Config, ctx):
    from . import subpixel

    if subject.precision != "fp32" or subject.runtime != "onnxruntime":
        raise RecipeError("pass 'litert' converts the PyTorch model: put it after the model "
                          "passes, not after another graph pass")
    gen = ctx.family.deployable(subject.model).eval()
    latent_dim = gen.cfg.latent_dim
    variants = {"subpixel": subpixel.rewrite(gen)} if isinstance(
        gen, subpixel.SubPixelGenerator) else {"convtranspose": gen,
                                               "subpixel": subpixel.rewrite(gen)}
    if cfg.graph != "auto":
        if cfg.graph not in variants:
            raise RecipeError(f"pass 'litert': graph {cfg.graph!r} is not one of this model's "
                              f"variants {sorted(variants)}")
        variants = {cfg.graph: variants[cfg.graph]}
    calibration = normal_latents(cfg.calibration_seed, cfg.calibration_samples, latent_dim)
    check_z = normal_latents(ctx.seed + 1, cfg.validation_samples, latent_dim)
    built, failed, timings = {}, {}, {}
    for name, module in variants.items():
        work = ctx.scratch(f"litert-{name}")
        try:
            path = convert(module, latent_dim, work / "fp32.tflite")
            if cfg.precision != "fp32":
                path = quantize(path, work / f"{cfg.precision}.tflite", cfg.precision,
                                calibration)
            built[name] = (path, validate(gen, path, check_z, cfg))
        except ExportError as exc:
            failed[name] = str(exc)
            continue
        if len(variants) > 1:
            timings[name] = {"batch1_ms": batch1_ms(path, latent_dim, cfg.timing_repeats)}
    if not built:
        raise ExportError(f"no LiteRT {cfg.precision} graph: " + "; ".join(
            f"{name}: {why}" for name, why in failed.items()))
    chosen = min(built, key=lambda n: timings.get(n, {}).get("batch1_ms", 0.0))
    path, validation = built[chosen]
    info = {"precision": cfg.precision, "graph": chosen, "graph_requested": cfg.graph,
            "converter": f"litert-torch {_version('litert-torch')}",
            "runtime": f"ai-edge-litert {litert_version()}",
            "validation": {**validation, "samples": cfg.validation_samples,
                           "seed": ctx.seed + 1},
            **({"timings": timings, "timing_repeats": cfg.timing_repeats} if timings else {}),
            **({"variants_failed": failed} if failed else {})}
    if cfg.precision != "fp32":
        info["quantizer"] = f"ai-edge-quantizer {_version('ai-edge-quantizer')}"
    if cfg.precision == "int8":
        info["calibration"] = {
            "source": "latent rng splitmix64-box-muller-v1", "seed": cfg.calibration_seed,
            "samples": len(calibration),
            "sha256": hashlib.sha256(calibration.tobytes()).hexdigest()}
    return replace(subject, graph=path, precision=cfg.precision, runtime="litert", info=info)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
