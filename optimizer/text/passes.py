"""Text passes: distillation, attention-head pruning, magnitude pruning, fine-tuning (PyTorch)
and INT8 / FP16 quantization (ONNX, last in a chain).

Each pass is a frozen `Config` plus a function; recipes name them under `points[].passes`
exactly as for image models, and unknown parameters are refused by name.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn
from transformers import GPT2LMHeadModel

from ..errors import OptimizerError, RecipeError
from ..passes import build_config
from ..passes.finetune import Config as FinetuneConfig
from ..models.dcgan import count_parameters
from .model import gpt2_config, heads_per_layer, keep_heads
from .train import lm_loss, train_lm


# --------------------------------------------------------------------------- distillation


@dataclass(frozen=True)
class DistillConfig:
    """Train a smaller student on the current model's soft targets (the model becomes the student)."""

    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft-target loss; 0 trains on the labels only (the control)
    epochs: int | None = None  # default: the recipe's train.epochs (the same budget as the teacher)

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if min(self.n_layer, self.n_embd, self.n_head) <= 0:
            raise ValueError("n_layer, n_embd and n_head must be > 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {self.alpha}")


def distill(teacher: GPT2LMHeadModel, cfg: DistillConfig, ctx) -> tuple[GPT2LMHeadModel, dict]:
    tc = teacher.config
    torch.manual_seed(ctx.seed + 1)  # the student's initialisation: the same for every alpha
    student = GPT2LMHeadModel(gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, tc.n_positions,
                                          tc.vocab_size, tc.eos_token_id, tc.resid_pdrop))
    desc = "distill" if cfg.alpha > 0 else "student (labels only)"
    student, hist = train_lm(student, ctx.train, ctx.val, ctx.recipe.train, ctx.seed,
                             ctx.progress, epochs=cfg.epochs, teacher=teacher,
                             temperature=cfg.temperature, alpha=cfg.alpha, desc=desc)
    return student, {"teacher_params": count_parameters(teacher),
                     "student_params": count_parameters(student), **hist.info()}


# --------------------------------------------------------------------------- head pruning


@dataclass(frozen=True)
class PruneHeadsConfig:
    """Remove the least important attention heads (Michel et al., 2019), physically."""

    ratio: float  # fraction of all heads removed, within [0.1, 0.7]
    batches: int = 8  # training batches over which importance is accumulated
    finetune_epochs: int = 0  # recovery training after the cut

    def __post_init__(self):
        if not 0.1 <= self.ratio <= 0.7:
            raise ValueError(f"ratio must be within [0.1, 0.7], got {self.ratio}")
        if self.batches < 1 or self.finetune_epochs < 0:
            raise ValueError("batches must be >= 1 and finetune_epochs >= 0")


def head_importance(model: GPT2LMHeadModel, data: torch.Tensor, batch_size: int,
                    batches: int) -> list[torch.Tensor]:
    """|dL/d gate| per head, a gate of 1 multiplying each head's output (Michel et al.),
    summed over batches and L2-normalised within each layer."""
    gates = [torch.ones(b.attn.num_heads, requires_grad=True) for b in model.transformer.h]
    hooks = []
    for block, gate in zip(model.transformer.h, gates):
        d = block.attn.head_dim

        def hook(module, args, gate=gate, d=d):
            return (args[0] * gate.repeat_interleave(d),)
        hooks.append(block.attn.c_proj.register_forward_pre_hook(hook))
    importance = [torch.zeros(len(g)) for g in gates]
    was_training = model.training
    model.eval()
    try:
        for i in range(min(batches, max(1, len(data) // batch_size))):
            ids = data[i * batch_size:(i + 1) * batch_size]
            loss = lm_loss(model(input_ids=ids).logits, ids)
            grads = torch.autograd.grad(loss, gates)
            for acc, g in zip(importance, grads):
                acc += g.abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [imp / (imp.norm() + 1e-12) for imp in importance]


def prune_heads(model: GPT2LMHeadModel, cfg: PruneHeadsConfig, ctx) -> tuple[GPT2LMHeadModel, dict]:
    model = copy.deepcopy(model)
    importance = head_importance(model, ctx.train, ctx.recipe.train.batch_size, cfg.batches)
    ranked = sorted((float(s), layer, head) for layer, imp in enumerate(importance)
                    for head, s in enumerate(imp))
    total = len(ranked)
    target = round(cfg.ratio * total)
    left = [len(imp) for imp in importance]
    removed: dict[int, list[int]] = {}
    for _, layer, head in ranked:
        if sum(len(v) for v in removed.values()) >= target:
            break
        if left[layer] > 1:  # every layer keeps at least one head
            removed.setdefault(layer, []).append(head)
            left[layer] -= 1
    before = count_parameters(model)
    for layer, block in enumerate(model.transformer.h):
        gone = set(removed.get(layer, []))
        if gone:
            keep_heads(block.attn, [h for h in range(block.attn.num_heads) if h not in gone])
    info = {"heads_before": total, "heads_removed": sum(len(v) for v in removed.values()),
            "heads_per_layer": heads_per_layer(model),
            "removed": {str(k): sorted(v) for k, v in sorted(removed.items())},
            "importance": "Michel et al. 2019: |dL/dgate|, layer-normalised",
            "params_before": before, "params_after": count_parameters(model)}
    if cfg.finetune_epochs:
        model, hist = train_lm(model, ctx.train, ctx.val, ctx.recipe.train, ctx.seed, ctx.progress,
                               epochs=cfg.finetune_epochs, desc="finetune pruned")
        info["finetune"] = hist.info()
    return model, info


# --------------------------------------------------------------------------- magnitude / finetune


@dataclass(frozen=True)
class PruneMagnitudeConfig:
    """Zero the smallest weights of every transformer matrix (global L1), for the sparsity study.
    Shapes do not change: dense kernels do not get faster, the file does not shrink."""

    ratio: float

    def __post_init__(self):
        if not 0.1 <= self.ratio <= 0.9:
            raise ValueError(f"ratio must be within [0.1, 0.9], got {self.ratio}")


def _matrices(model: GPT2LMHeadModel) -> list[nn.Module]:
    # attention and MLP projections (transformers' Conv1D); not the embeddings / tied output
    return [m for m in model.transformer.h.modules()
            if hasattr(m, "weight") and m.weight is not None and m.weight.dim() == 2]


def prune_magnitude(model: GPT2LMHeadModel, cfg: PruneMagnitudeConfig, ctx) -> tuple[GPT2LMHeadModel, dict]:
    from ..passes.prune_magnitude import prune_global, sparsity

    model = copy.deepcopy(model)
    prune_global(_matrices(model), cfg.ratio)
    return model, {"sparsity": sparsity(_matrices(model)),
                   "scope": "transformer block matrices (attention + MLP)"}


def finetune(model: GPT2LMHeadModel, cfg: FinetuneConfig, ctx) -> tuple[GPT2LMHeadModel, dict]:
    model = copy.deepcopy(model)
    model, hist = train_lm(model, ctx.train, ctx.val, ctx.recipe.train, ctx.seed, ctx.progress,
                           epochs=cfg.epochs, desc="finetune")
    return model, hist.info()


# --------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizeConfig:
    """INT8 dynamic (weights int8 ahead of time, activations quantized per run) or FP16.

    ONNX Runtime's recommended graph pre-processing (`quant_pre_process`: symbolic shape
    inference and graph optimisation) runs first; without it the tied output projection stays
    in float behind a DequantizeLinear and INT8 is slower than FP32. Per-tensor weight scales
    were 1.3x faster than per-channel at batch 1 on a 2-core x86 machine; the recipe chooses.
    """

    mode: str = "dynamic-int8"  # dynamic-int8 | fp16
    per_channel: bool = False
    preprocess: bool = True
    reduce_range: bool = False  # 7-bit weights, for CPUs without VNNI (avoids saturation)

    def __post_init__(self):
        if self.mode not in ("dynamic-int8", "fp16"):
            raise ValueError(f"mode must be 'dynamic-int8' or 'fp16', got {self.mode!r}")


def op_counts(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def quantize(fp32: Path, cfg: QuantizeConfig, workdir: Path) -> tuple[Path, dict]:
    """fp32 ONNX decoder -> quantized ONNX decoder, with a report of what changed."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "quantized.onnx"
    source = fp32
    report: dict[str, Any] = {"mode": cfg.mode}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.mode == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
            onnx.save(model, str(out))
            report["io"] = "float32 (casts at the graph edges; the cache stays float32)"
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            from onnxruntime.quantization.shape_inference import quant_pre_process

            if cfg.preprocess:
                source = workdir / "preprocessed.onnx"
                try:
                    quant_pre_process(str(fp32), str(source))
                except Exception as exc:
                    raise OptimizerError(f"quant_pre_process failed: {exc}") from None
            quantize_dynamic(str(source), str(out), per_channel=cfg.per_channel,
                             reduce_range=cfg.reduce_range, weight_type=QuantType.QInt8)
            report.update(per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                          weight_type="int8", activations="uint8, dynamic per tensor",
                          preprocess="onnxruntime quant_pre_process" if cfg.preprocess else "none")
    before, after = op_counts(fp32), op_counts(out)
    report["ops_before"] = {k: before[k] for k in ("MatMul", "Gemm", "Gather") if k in before}
    report["ops_after"] = {k: v for k, v in after.items()
                           if k in ("MatMul", "Gemm", "Gather", "MatMulInteger",
                                    "DynamicQuantizeLinear", "DequantizeLinear", "Cast")}
    report["sha256_fp32_source"] = hashlib.sha256(fp32.read_bytes()).hexdigest()
    return out, report


# --------------------------------------------------------------------------- registry

# name -> (config class, function, kind); kind "torch" returns (model, info), "onnx" is last
TEXT_PASSES: dict[str, tuple[type, Callable | None, str]] = {
    "distill": (DistillConfig, distill, "torch"),
    "prune_heads": (PruneHeadsConfig, prune_heads, "torch"),
    "prune_magnitude": (PruneMagnitudeConfig, prune_magnitude, "torch"),
    "finetune": (FinetuneConfig, finetune, "torch"),
    "quantize": (QuantizeConfig, None, "onnx"),
}


def make_text_config(name: str, params: dict[str, Any]):
    if name not in TEXT_PASSES:
        raise RecipeError(f"unknown text pass {name!r}; registered: {sorted(TEXT_PASSES)}")
    return build_config(name, TEXT_PASSES[name][0], params)
