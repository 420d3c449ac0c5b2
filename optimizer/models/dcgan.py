"""DCGAN (Radford et al., 2016): generator and discriminator for square images of 32 or 64 px.

Generator: a latent (B, nz) goes through a 4x4 ConvTranspose to (B, ngf*2^(k-1), 4, 4), then
k-1 stride-2 ConvTranspose stages each doubling the side and halving the channels, BatchNorm
and ReLU between, Tanh at the end: (B, nc, S, S) in [-1, 1], where S = 4 * 2^(k-1), k = log2(S) - 1.
The discriminator mirrors it with stride-2 convolutions and LeakyReLU(0.2), ending in one logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DCGANConfig:
    latent_dim: int = 100  # nz
    image_size: int = 64  # S: 32 or 64
    channels: int = 3  # nc: 1 grayscale, 3 RGB
    ngf: int = 64  # generator width at the last stage
    ndf: int = 64  # discriminator width at the first stage
    # Generator hidden widths, first stage to last; None means ngf*2^(k-2) ... ngf. Set by
    # structured pruning, which removes channels per layer.
    g_widths: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.image_size not in (32, 64):
            raise ValueError(f"DCGAN image_size must be 32 or 64, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"DCGAN channels must be 1 or 3, got {self.channels}")
        for name in ("latent_dim", "ngf", "ndf"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DCGAN {name} must be positive, got {getattr(self, name)}")
        if self.g_widths is not None and (len(self.g_widths) != self.stages - 1
                                          or min(self.g_widths) <= 0):
            raise ValueError(f"DCGAN g_widths needs {self.stages - 1} positive widths for "
                             f"{self.image_size}px, got {list(self.g_widths)}")

    @property
    def generator_widths(self) -> tuple[int, ...]:
        if self.g_widths is not None:
            return tuple(self.g_widths)
        return tuple(self.ngf * 2 ** i for i in reversed(range(self.stages - 1)))  # 512..64

    @property
    def stages(self) -> int:
        return int(math.log2(self.image_size)) - 1  # 32 -> 4 stages, 64 -> 5


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        widths = list(cfg.generator_widths)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False),  # (B, w0, 4, 4)
            nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),  # side x2
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None])  # (B, nz) -> (B, nc, S, S)


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        widths = [cfg.ndf * 2 ** i for i in range(cfg.stages - 1)]  # e.g. 64..512
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, widths[0], 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]  # (B, 1, 1, 1) logit
        self.main = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()  # (B,) logits


def _dcgan_init(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """True parameter count: a shared (tied) tensor is counted once, as parameters() yields it once."""
    return sum(p.numel() for p in model.parameters())


def with_random_bn_statistics(gen: nn.Module, seed: int = 0) -> nn.Module:
    """Eval-mode copy-in-place with non-trivial BatchNorm statistics and shifts.

    A freshly initialised generator has running mean 0 and variance 1, so BatchNorm folding
    would be an identity; tests and benchmarks of untrained generators use this instead.
    """
    torch.manual_seed(seed)
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return gen.eval()
