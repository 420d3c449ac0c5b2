"""Post-training quantization with ONNX Runtime: static INT8 (QDQ) or FP16.

INT8 is static (activations calibrated), QDQ format, per-channel weights. The calibration set
for a generator is its input distribution, so it is drawn from the bundle's own latent RNG:
its seed, size and sha256 go into the report (and from there into the manifest).

The known trap: ORT's CPU provider has no integer ConvTranspose, so a QDQ ConvTranspose runs
in float between extra quantize/dequantize nodes and is *slower* than FP32. With
`graph: auto` both INT8 graphs are built, the original (ConvTranspose) one and the exact
sub-pixel rewrite (Conv + DepthToSpace, real QLinearConv kernels). Both are timed against FP32
on this machine, and the faster one is kept. The choice and the timings are recorded.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edge_app.latent import normal_latents

from ..evaluate import OnnxGenerator
from ..export import export_generator
from ..recipe import ExportConfig
from . import subpixel

GRAPHS = ("auto", "convtranspose", "subpixel")
FLOAT_COMPUTE_OPS = ("ConvTranspose", "Conv", "NchwcConv", "FusedConv", "MatMul", "Gemm",
                     "FusedGemm")


@dataclass(frozen=True)
class Config:
    mode: str = "static-int8"  # "static-int8" or "fp16"
    graph: str = "auto"  # INT8 graph: auto (measure both, keep the faster), convtranspose, subpixel
    per_channel: bool = True
    calibration_samples: int = 256
    calibration_seed: int = 0
    timing_repeats: int = 30  # timed runs per graph and batch size when graph is auto

    def __post_init__(self):
        if self.mode not in ("static-int8", "fp16"):
            raise ValueError(f"mode must be 'static-int8' or 'fp16', got {self.mode!r}")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {list(GRAPHS)}, got {self.graph!r}")
        if self.calibration_samples < 16:
            raise ValueError("calibration_samples must be at least 16")


@dataclass
class Result:
    path: Path  # the quantized model.onnx
    report: dict[str, Any]  # goes into the manifest's "quantize" technique params


class _LatentReader:
    """ORT CalibrationDataReader over seeded latents, in batches of 16."""

    def __init__(self, input_name: str, latents: np.ndarray):
        self.batches = iter([{input_name: latents[i:i + 16]} for i in range(0, len(latents), 16)])

    def get_next(self):
        return next(self.batches, None)


def ort_op_counts(path: Path) -> dict[str, int]:
    """Op types of the graph ONNX Runtime actually executes (after its CPU graph optimizations)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # its "hardware-specific graph" warning: we only count ops
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
        return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def median_latency_ms(paths: dict[str, Path], latent_dim: int, batch: int,
                      repeats: int) -> dict[str, float]:
    """Median wall time per run of each model, measured round-robin so drift hits all alike."""
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    z = normal_latents(1, batch, latent_dim)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for session in sessions.values():  # warm-up
        session.run(None, {"z": z})
    for _ in range(repeats):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"z": z})
            times[key].append((time.perf_counter() - start) * 1e3)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def psnr_db(reference: np.ndarray, other: np.ndarray, value_range: float = 2.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(value_range ** 2 / mse)


def _quantize_int8(src: Path, dst: Path, latents: np.ndarray, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared))
    quantize_static(str(prepared), str(dst), _LatentReader("z", latents),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink()


def _fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the graph still takes and returns float32, as the manifest declares
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def run(gen: torch.nn.Module, cfg: Config, workdir: Path,
        export_cfg: ExportConfig = ExportConfig()) -> Result:
    """Export `gen` (eval mode) and quantize it; return the chosen model file and a report."""
    latent_dim = gen.cfg.latent_dim
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = workdir / "fp32.onnx"
    export_generator(gen, latent_dim, fp32, export_cfg)
    check_z = normal_latents(12345, 16, latent_dim)
    reference = OnnxGenerator(fp32, latent_dim).decode(check_z).numpy()
    report: dict[str, Any] = {"mode": cfg.mode}

    if cfg.mode == "fp16":
        chosen = workdir / "fp16.onnx"
        _fp16(fp32, chosen)
    else:
        latents = normal_latents(cfg.calibration_seed, cfg.calibration_samples, latent_dim)
        report["calibration"] = {"source": "latent rng splitmix64-box-muller-v1",
                                 "seed": cfg.calibration_seed, "samples": len(latents),
                                 "sha256": hashlib.sha256(latents.tobytes()).hexdigest()}
        report.update(format="QDQ", per_channel=cfg.per_channel, activations="uint8",
                      weights="int8")
        graphs = ["convtranspose", "subpixel"] if cfg.graph == "auto" else [cfg.graph]
        if isinstance(gen, subpixel.SubPixelGenerator):  # already rewritten (e.g. by QAT)
            graphs = ["subpixel"]
        candidates = {}
        for graph in graphs:
            src = fp32
            if graph == "subpixel":  # exact rewrite, validated against the original generator
                src = fp32
                if not isinstance(gen, subpixel.SubPixelGenerator):
                    src = workdir / "subpixel.onnx"
                    export_generator(subpixel.run(gen), latent_dim, src, export_cfg)
            candidates[graph] = workdir / f"int8-{graph}.onnx"
            _quantize_int8(src, candidates[graph], latents, cfg.per_channel)
        if len(candidates) > 1:
            timing = {f"batch{b}": median_latency_ms({"fp32": fp32, **candidates}, latent_dim, b,
                                                     cfg.timing_repeats) for b in (1, 16)}
            # geometric mean of batch-1 and batch-16 latency: both matter on a device
            score = {g: (timing["batch1"][g] * timing["batch16"][g]) ** 0.5 for g in candidates}
            choice = min(score, key=score.get)
            report["timing_ms"] = timing
            report["speedup_vs_fp32"] = {
                g: round((timing["batch1"]["fp32"] * timing["batch16"]["fp32"]) ** 0.5 / s, 3)
                for g, s in score.items()}
            report["chosen_by"] = "median latency on this machine (geometric mean of batch 1, 16)"
        else:
            choice = graphs[0]
            report["chosen_by"] = "recipe" if cfg.graph != "auto" else "model is already sub-pixel"
        report["graph"] = choice
        chosen = candidates[choice]
    report["ort_ops"] = ort_op_counts(chosen)
    if cfg.mode == "static-int8":  # compute ops ORT still runs in float in the INT8 graph
        report["float_ops"] = sorted(op for op in report["ort_ops"] if op in FLOAT_COMPUTE_OPS)
    quantized = OnnxGenerator(chosen, latent_dim).decode(check_z).numpy()
    report["psnr_vs_fp32_db"] = round(psnr_db(reference, quantized), 2)
    report["file_size_bytes"] = {"fp32": fp32.stat().st_size, "quantized": chosen.stat().st_size}
    return Result(chosen, report)
