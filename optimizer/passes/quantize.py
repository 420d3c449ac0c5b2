"""Post-training quantization with ONNX Runtime, of the exported and validated FP32 graph.

Modes (a family lists those that apply to it, the first its default):
- static-int8: activations calibrated on the family's calibration set (an image generator's
  own latent distribution, drawn from the bundle's latent RNG; a decoder's windows of the
  validation split, fed as a prefill and cached decode steps: seed, size and sha256 go into the
  report), QDQ format, int8 weights (per channel by default for images), uint8 activations.
  The family may choose which nodes are quantized (`Family.static_int8_nodes`: the decoders
  quantize their weight products only, optimizer/text/calibrate.py) and says so in the report.
- dynamic-int8: int8 weights ahead of time, activations quantized per run (the decoders).
  ONNX Runtime's recommended pre-processing (`quant_pre_process`: symbolic shape inference and
  graph optimisation) runs first; without it a tied output projection stays in float behind a
  DequantizeLinear and INT8 is slower than FP32. Per-tensor weight scales were 1.3x faster than
  per-channel at batch 1 on a 2-core x86 machine; the recipe chooses. The pre-processing leaves
  a tied embedding twice (int8 for the head, uint8 for the lookup); the lookup is rewritten to
  read the head's copy (optimizer/graphs.py), which took a small GPT-2's file from 0.40x to
  0.27x of FP32.
- fp16: weights and compute in float16, float32 at the graph's edges (the cache stays float32).

The static-INT8 trap for image generators: ORT's CPU provider has no integer ConvTranspose, so a
QDQ ConvTranspose runs in float between extra quantize/dequantize nodes and is *slower* than
FP32. With `graph: auto` every exact variant the family offers (the ConvTranspose graph and its
sub-pixel rewrite, Conv + DepthToSpace with real QLinearConv kernels) is quantized and timed
against FP32 on this machine, and the faster one is kept; the choice and the timings are
recorded.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from ..errors import OptimizerError, RecipeError
from ..graphs import share_tied_int8_embedding, share_tied_qdq_embedding

STAGE = "graph"
FAMILIES = None  # every family: each lists its modes (Family.quantize_modes)
MODES = ("static-int8", "dynamic-int8", "fp16")
GRAPHS = ("auto", "convtranspose", "subpixel")
PRECISION = {"static-int8": "int8", "dynamic-int8": "int8", "fp16": "fp16"}
FLOAT_COMPUTE_OPS = ("ConvTranspose", "Conv", "NchwcConv", "FusedConv", "MatMul", "Gemm",
                     "FusedGemm")
# The parameters each mode reads (the manifest records these, resolved)
APPLIES = {"static-int8": ("per_channel", "graph", "calibration_samples", "calibration_seed",
                           "timing_repeats", "keep_head"),
           "dynamic-int8": ("per_channel", "preprocess", "reduce_range"), "fp16": ()}


@dataclass(frozen=True)
class Config:
    mode: str | None = None  # static-int8 | dynamic-int8 | fp16; None: the family's default
    per_channel: bool | None = None  # weight scales per output channel; None: family default
    # static-int8
    graph: str = "auto"  # auto (measure every variant, keep the fastest) or a variant's name
    calibration_samples: int = 256
    calibration_seed: int = 0
    timing_repeats: int = 30  # timed runs per variant and batch size when graph is auto
    keep_head: bool = False  # decoders: the output projection (logits) stays in float
    # dynamic-int8
    preprocess: bool = True  # onnxruntime quant_pre_process first
    reduce_range: bool = False  # 7-bit weights, for CPUs without VNNI (avoids saturation)

    def __post_init__(self):
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {list(GRAPHS)}, got {self.graph!r}")
        if self.calibration_samples < 16:
            raise ValueError("calibration_samples must be at least 16")


def check(cfg: Config, family) -> None:
    mode = cfg.mode or family.quantize_modes[0]
    if mode not in family.quantize_modes:
        raise RecipeError(f"pass 'quantize': mode {mode!r} does not apply to family "
                          f"{family.name!r}; its modes: {list(family.quantize_modes)}")


def params(cfg: Config) -> dict:
    """Recorded by `run` itself, resolved (the family's defaults) and for the mode only."""
    return {}


def op_counts(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def ort_op_counts(path: Path) -> dict[str, int]:
    """Op types of the graph ONNX Runtime actually executes (after its CPU graph optimizations)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # its "hardware-specific graph" warning: we only count ops
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def median_latency_ms(paths: dict[str, Path], feed: dict, repeats: int) -> dict[str, float]:
    """Median wall time per run of each graph, measured round-robin so drift hits all alike."""
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for session in sessions.values():  # warm-up
        session.run(None, feed)
    for _ in range(repeats):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[key].append((time.perf_counter() - start) * 1e3)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def _static_int8(src: Path, dst: Path, reader, per_channel: bool, nodes=None) -> dict:
    """QDQ static INT8 of `src`; `nodes(prepared ModelProto)` may choose what is quantized
    (quantize_static's op_types_to_quantize / nodes_to_exclude) and says so in its report."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(prepared))
    chosen, report = (nodes(onnx.load(str(prepared), load_external_data=False)) if nodes
                      else ({}, {}))
    quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, **chosen)
    prepared.unlink()
    if report:  # the family chose the nodes (a decoder): a tied lookup reads the head's copy
        model = onnx.load(str(dst))
        tied = share_tied_qdq_embedding(model)
        if tied:
            onnx.save(model, str(dst))
        report["tied_embedding"] = tied or "not shared (no int8 head holds the lookup's table)"
    return report


def _dynamic_int8(src: Path, dst: Path, cfg: Config, per_channel: bool) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = src
    if cfg.preprocess:
        source = dst.with_name("preprocessed.onnx")
        try:
            quant_pre_process(str(src), str(source))
        except Exception as exc:
            raise OptimizerError(f"quant_pre_process failed: {exc}") from None
    quantize_dynamic(str(source), str(dst), per_channel=per_channel,
                     reduce_range=cfg.reduce_range, weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    tied = share_tied_int8_embedding(model)
    if tied:
        onnx.save(model, str(dst))
    return {"weight_type": "int8", "activations": "uint8, dynamic per tensor",
            "preprocess": "onnxruntime quant_pre_process" if cfg.preprocess else "none",
            "tied_embedding": tied or "none found (nothing stored twice)"}


def _fp16(src: Path, dst: Path) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the graph still takes and returns float32, as the manifest declares
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return {"io": "float32 (casts at the graph edges; the cache stays float32)"}


def _static(subject, cfg: Config, ctx, workdir: Path, per_channel: bool) -> tuple[Path, dict]:
    """Quantize every variant the family offers; keep the recipe's, or by measurement."""
    family = ctx.family
    reader_of = lambda: family.calibration(subject, cfg, ctx)  # noqa: E731 (a fresh reader each)
    report: dict[str, Any] = {"calibration": reader_of()[1], "format": "QDQ",
                              "activations": "uint8", "weights": "int8"}
    variants = family.graph_variants(subject, ctx)
    if len(variants) == 1 or cfg.graph == "auto":
        names = list(variants)
    elif cfg.graph in variants:
        names = [cfg.graph]
    else:
        raise RecipeError(f"pass 'quantize': graph {cfg.graph!r} is not offered here; variants: "
                          f"{list(variants)}")
    candidates = {}
    for name in names:
        candidates[name] = workdir / f"int8-{name}.onnx"
        nodes = _static_int8(variants[name], candidates[name], reader_of()[0], per_channel,
                             lambda model: family.static_int8_nodes(model, cfg))
        if nodes:  # the family's choice; a tied embedding's sharing as dynamic INT8 records it
            report["tied_embedding"] = nodes.pop("tied_embedding")
            report["nodes"] = nodes
    if len(candidates) > 1:
        timing = {key: median_latency_ms({"fp32": subject.graph, **candidates}, feed,
                                         cfg.timing_repeats)
                  for key, feed in family.timing_feeds(subject).items()}
        # geometric mean over the family's workloads (images: batch 1 and 16): both matter
        score = {g: statistics.geometric_mean([t[g] for t in timing.values()])
                 for g in candidates}
        fp32 = statistics.geometric_mean([t["fp32"] for t in timing.values()])
        choice = min(score, key=score.get)
        report.update(timing_ms=timing, chosen_by="median latency on this machine (geometric "
                      "mean of " + ", ".join(timing) + ")",
                      speedup_vs_fp32={g: round(fp32 / s, 3) for g, s in score.items()})
    else:
        choice = names[0]
        report["chosen_by"] = "the only variant" if len(variants) == 1 else "recipe"
    report["graph"] = choice
    return candidates[choice], report


def run(subject, cfg: Config, ctx):
    family, fp32 = ctx.family, subject.graph
    mode = cfg.mode or family.quantize_modes[0]
    per_channel = family.quantize_per_channel if cfg.per_channel is None else cfg.per_channel
    workdir = ctx.scratch("quantize")
    resolved = {**asdict(cfg), "mode": mode, "per_channel": per_channel}
    report: dict[str, Any] = {"mode": mode, **{k: resolved[k] for k in APPLIES[mode]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "fp16":
            out = workdir / "fp16.onnx"
            report.update(_fp16(fp32, out))
        elif mode == "dynamic-int8":
            out = workdir / "quantized.onnx"
            report.update(_dynamic_int8(fp32, out, cfg, per_channel))
        else:
            out, static = _static(subject, cfg, ctx, workdir, per_channel)
            report.update(static)
    before, after = op_counts(fp32), op_counts(out)
    report["ops_before"] = {k: before[k] for k in ("MatMul", "Gemm", "Gather", "Conv",
                                                   "ConvTranspose") if k in before}
    report["ops_after"] = {k: v for k, v in after.items()
                           if k in ("MatMul", "Gemm", "Gather", "MatMulInteger", "QLinearConv",
                                    "QuantizeLinear",
                                    "DynamicQuantizeLinear", "DequantizeLinear", "Cast")}
    report["ort_ops"] = ort_op_counts(out)
    if mode != "fp16":  # compute ops ORT still runs in float in the INT8 graph
        report["float_ops"] = sorted(op for op in report["ort_ops"] if op in FLOAT_COMPUTE_OPS)
    report["sha256_fp32_source"] = hashlib.sha256(fp32.read_bytes()).hexdigest()
    report["file_size_bytes"] = {"fp32": fp32.stat().st_size, "quantized": out.stat().st_size}
    report.update(family.compare_graphs(fp32, out, subject))
    return replace(subject, graph=out, precision=PRECISION[mode], info=report)
