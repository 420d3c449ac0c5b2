"""Quantization-aware training (QAT), for the INT8 graph a model will run as.

Weights are fake-quantized symmetric per output channel and each quantized layer's input affine
per tensor (uint8), with ranges tracked as an exponential moving average of batch min/max;
gradients pass straight through. Training is the family's own. At the end the weights are
snapped to their INT8 grid and the float model is handed on; the following `quantize` pass
(static INT8, per-channel weights) then quantizes it with ONNX Runtime, as it would a PTQ model,
and the two are compared in the same table.

- Image generators: the deployed INT8 graph is the sub-pixel rewrite (BatchNorm folded, Conv +
  DepthToSpace); QAT fine-tunes exactly that form, DCGAN adversarially against a fresh
  discriminator, Beta-VAE with the VAE loss.
- Decoders (GPT-2, the Llama family): every attention and MLP projection of the blocks and the
  output head (what the decoders' static INT8 quantizes; `head: false` when the recipe keeps
  it in float), fine-tuned with the family's language-model training for `epochs`. GPT-2's
  projections are transformers' Conv1D (weight [in, out]: its output channels are axis 1). A
  tied head shares its matrix with the embedding, which is snapped with it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import subpixel


@dataclass(frozen=True)
class Config:
    epochs: int = 1
    ema: float = 0.01  # activation range update rate
    head: bool = True  # decoders: fake-quantize the output head too (static INT8 quantizes it)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def fake_quant_weight(weight: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Symmetric INT8 per output channel (`axis`): scale = max|w| / 127."""
    scale = weight.detach().abs().movedim(axis, 0).flatten(1).amax(1).clamp_min(1e-8) / 127.0
    zero = torch.zeros(len(scale), dtype=torch.int32, device=weight.device)  # on the GPU too
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, axis, -127, 127)


def output_axis(layer: nn.Module) -> int:
    """The weight axis of the output channels: 0 for Linear/Conv2d, 1 for GPT-2's Conv1D."""
    return 1 if type(layer).__name__ == "Conv1D" else 0


class FakeQuantActivation(nn.Module):
    """uint8 affine per tensor; range = EMA of batch min/max while training, frozen in eval."""

    def __init__(self, ema: float):
        super().__init__()
        self.ema = ema
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            low, high = x.detach().min().clamp_max(0), x.detach().max().clamp_min(0)
            if not self.seen:
                self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
            else:
                self.low.lerp_(low, self.ema), self.high.lerp_(high, self.ema)
        scale = float((self.high - self.low).clamp_min(1e-8) / 255.0)
        zero = int(torch.clamp(torch.round(-self.low / scale), 0, 255))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


class QuantLayer(nn.Module):
    """A Conv2d or Linear whose input and weight are fake-quantized."""

    def __init__(self, layer: nn.Module, ema: float):
        super().__init__()
        self.layer, self.act = layer, FakeQuantActivation(ema)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        weight = fake_quant_weight(layer.weight, output_axis(layer))
        x = self.act(x)
        if isinstance(layer, nn.Linear):
            return nn.functional.linear(x, weight, layer.bias)
        if output_axis(layer) == 1:  # Conv1D: x @ W + b, W [in, out]
            return torch.matmul(x, weight) + layer.bias
        return layer._conv_forward(x, weight, layer.bias)

    def snapped(self) -> nn.Module:
        """The wrapped layer, its weight snapped to the INT8 grid in place."""
        with torch.no_grad():
            self.layer.weight.copy_(fake_quant_weight(self.layer.weight,
                                                      output_axis(self.layer)))
        return self.layer


def wrap(model: nn.Module, layers: list[nn.Module], ema: float) -> list[str]:
    """Replace each of `layers` inside `model` by a QuantLayer around it; their names."""
    wanted = {id(m) for m in layers}
    names = [name for name, m in model.named_modules() if id(m) in wanted]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, QuantLayer(getattr(owner, child), ema))
    return names


def unwrap(model: nn.Module) -> nn.Module:
    """Every QuantLayer in `model` back to its layer, weights snapped (in place)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, m.snapped())
    return model


class QatGenerator(nn.Module):
    """A SubPixelGenerator with every Conv/Linear wrapped in fake quantization."""

    def __init__(self, float_model: subpixel.SubPixelGenerator, ema: float):
        super().__init__()
        self.model = copy.deepcopy(float_model)
        self.cfg = float_model.cfg
        wrap(self.model, [self.model.stem, *(m for m in self.model.body
                                             if isinstance(m, nn.Conv2d))], ema)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)

    def to_float(self) -> subpixel.SubPixelGenerator:
        """The float model with weights snapped to their INT8 grid (what ORT will quantize)."""
        return unwrap(copy.deepcopy(self.model)).eval()


STAGE = "model"
FAMILIES = ("dcgan", "beta-vae", "gpt2", "llama")


def _generator(subject, cfg: Config, ctx):
    family, model = ctx.family, subject.model
    qat = QatGenerator(subpixel.rewrite(family.deployable(model).eval()), cfg.ema)
    tuned, _ = family.finetune(family.with_deployable(model, qat), ctx, cfg.epochs)
    model = family.with_deployable(tuned, family.deployable(tuned).to_float())
    return replace(subject, model=model, info={})


def _decoder(subject, cfg: Config, ctx):
    family, model = ctx.family, subject.model  # the driver hands each pass its own copy
    layers, scope = family.magnitude_layers(model)
    head = model.get_output_embeddings() if cfg.head else None
    names = wrap(model, layers + ([head] if head is not None else []), cfg.ema)
    model, info = family.finetune(model, ctx, cfg.epochs)
    model = unwrap(model).eval()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    return replace(subject, model=model, info={
        "layers": len(names), "scope": scope + (" and the output head" if head is not None
                                                else "; the output head in float"),
        "weights": "int8 symmetric per output channel (snapped at the end)",
        "activations": "uint8 affine per tensor, EMA of batch min/max",
        **({"tied_embedding": "snapped with the head (one matrix)"} if tied else {}),
        "finetune": info})


def run(subject, cfg: Config, ctx):
    return (_decoder if ctx.family.task == "text-generation" else _generator)(subject, cfg, ctx)
