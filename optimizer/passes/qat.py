"""Quantization-aware training (QAT) of an image generator, for the INT8 graph it will run as.

The deployed INT8 graph is the sub-pixel rewrite (BatchNorm folded, Conv + DepthToSpace) with
per-channel INT8 weights and per-tensor uint8 activations. QAT fine-tunes exactly that form
with fake quantization in the forward pass (straight-through gradients). Weights are
symmetric per output channel; activations are affine per tensor, with ranges tracked as an
exponential moving average of batch min/max. Training is the family's own (DCGAN: adversarial
against a fresh discriminator; Beta-VAE: the VAE loss). At the end the weights are snapped to
their INT8 grid and the float sub-pixel model is handed on. The following `quantize` pass
(static INT8, sub-pixel graph) then quantizes it with ONNX Runtime, as it would a PTQ model.
The two are compared in the same table.
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

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric INT8 per output channel (axis 0): scale = max|w| / 127."""
    scale = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127.0
    zero = torch.zeros(len(scale), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


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
        weight = fake_quant_weight(self.layer.weight)
        x = self.act(x)
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


class QatGenerator(nn.Module):
    """A SubPixelGenerator with every Conv/Linear wrapped in fake quantization."""

    def __init__(self, float_model: subpixel.SubPixelGenerator, ema: float):
        super().__init__()
        self.model = copy.deepcopy(float_model)
        self.cfg = float_model.cfg
        self.model.stem = QuantLayer(self.model.stem, ema)
        self.model.body = nn.Sequential(*[QuantLayer(m, ema) if isinstance(m, nn.Conv2d) else m
                                          for m in self.model.body])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)

    def to_float(self) -> subpixel.SubPixelGenerator:
        """The float model with weights snapped to their INT8 grid (what ORT will quantize)."""
        out = copy.deepcopy(self.model)
        out.stem = out.stem.layer
        out.body = nn.Sequential(*[m.layer if isinstance(m, QuantLayer) else m for m in out.body])
        with torch.no_grad():
            for m in [out.stem, *out.body]:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(fake_quant_weight(m.weight))
        return out.eval()


STAGE = "model"
FAMILIES = ("dcgan", "beta-vae")


def run(subject, cfg: Config, ctx):
    family, model = ctx.family, subject.model
    qat = QatGenerator(subpixel.rewrite(family.deployable(model).eval()), cfg.ema)
    tuned, _ = family.finetune(family.with_deployable(model, qat), ctx, cfg.epochs)
    model = family.with_deployable(tuned, family.deployable(tuned).to_float())
    return replace(subject, model=model, info={})
