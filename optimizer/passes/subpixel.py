"""Exact re-expression of a DCGAN generator without ConvTranspose, for real INT8 kernels.

ONNX Runtime's CPU provider has no integer ConvTranspose: a QDQ ConvTranspose runs as
dequantize -> float ConvTranspose -> quantize, slower than plain FP32. This pass rewrites, with
BatchNorm folded in (eval mode):
- the first ConvTranspose (k4, s1, p0) on the 1x1 latent into a Linear (nz -> C*16) + reshape;
- each stride-2 ConvTranspose (k4, s2, p1) into Conv3x3 (C_in -> 4*C_out, pad 1) followed by
  PixelShuffle(2) (ONNX DepthToSpace, CRD order). Output pixel (2a+p, 2b+q) of the transposed
  conv only sees input rows a-1..a+1, through kernel taps (phase, offset) -> tap below.
The result equals the original up to float rounding (a test checks it); it costs 2.25x the
multiply-adds, which INT8 Conv kernels more than pay back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..models.dcgan import Generator

# (output phase p, input offset d) -> ConvTranspose kernel index, for k=4, s=2, p=1
_TAP = {(0, 0): 1, (0, -1): 3, (1, 0): 2, (1, 1): 0}


@dataclass(frozen=True)
class Config:
    pass  # the rewrite is exact and has no options


def _fold(conv: nn.ConvTranspose2d, bn: nn.BatchNorm2d | None):
    """ConvTranspose weight (C_in, C_out, k, k) and bias (C_out,) with eval BatchNorm folded."""
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[1])
    if bn is not None:
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale[None, :, None, None]
        bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    return weight, bias


def _subpixel_conv(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    c_in, c_out = weight.shape[:2]
    kernel = torch.zeros(c_out, 2, 2, c_in, 3, 3)
    for (p, dh), kh in _TAP.items():
        for (q, dw), kw in _TAP.items():
            kernel[:, p, q, :, dh + 1, dw + 1] = weight[:, :, kh, kw].T
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
    conv.weight.data.copy_(kernel.reshape(4 * c_out, c_in, 3, 3))
    conv.bias.data.copy_(bias.repeat_interleave(4))  # channel o*4 + p*2 + q
    return conv


class SubPixelGenerator(nn.Module):
    def __init__(self, gen: Generator):
        super().__init__()
        self.cfg = gen.cfg
        layers = list(gen.main)
        convs = [i for i, m in enumerate(layers) if isinstance(m, nn.ConvTranspose2d)]
        first_w, first_b = _fold(layers[convs[0]], layers[convs[0] + 1])
        self.width0 = first_w.shape[1]
        self.stem = nn.Linear(first_w.shape[0], self.width0 * 16)
        self.stem.weight.data.copy_(first_w.reshape(first_w.shape[0], -1).T)  # (C*16, nz)
        self.stem.bias.data.copy_(first_b.repeat_interleave(16))
        blocks: list[nn.Module] = [nn.ReLU()]
        for i in convs[1:]:
            has_bn = isinstance(layers[i + 1], nn.BatchNorm2d)
            weight, bias = _fold(layers[i], layers[i + 1] if has_bn else None)
            blocks += [_subpixel_conv(weight, bias), nn.PixelShuffle(2),
                       nn.ReLU() if has_bn else nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.stem(z).view(-1, self.width0, 4, 4)  # (B, C0, 4, 4)
        return self.body(x)  # (B, nc, S, S)


def rewrite(gen: Generator) -> SubPixelGenerator:
    if isinstance(gen, SubPixelGenerator):
        return gen
    if gen.training:
        raise ValueError("subpixel folds BatchNorm statistics: call it on an eval-mode generator")
    return SubPixelGenerator(gen).eval()


STAGE = "model"
FAMILIES = ("dcgan", "beta-vae")


def run(subject, cfg: Config, ctx):
    family = ctx.family
    gen = rewrite(family.deployable(subject.model).eval())
    return replace(subject, model=family.with_deployable(subject.model, gen), info={})
