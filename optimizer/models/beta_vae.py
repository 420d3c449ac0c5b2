"""Beta-VAE (Higgins et al., 2017): a conv encoder and a conv decoder, KL weighted by beta.

Encoder: stride-2 4x4 convolutions (32, 32, 64, 64 channels at 64 px; one fewer stage at
32 px) down to 4x4, then Linear -> 256 -> (mu, logvar) of size `latent_dim`.
Decoder: the DCGAN generator definition (models/dcgan.py) with nz = latent_dim. It is what gets
deployed (the bundle samples z ~ N(0, I) and decodes), so channel pruning, the sub-pixel
rewrite and INT8 apply to it unchanged. Loss per image: sum of squared error over pixels
(Gaussian likelihood on [-1, 1]) + beta * KL(q(z|x) || N(0, I)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .dcgan import DCGANConfig, Generator


@dataclass(frozen=True)
class BetaVAEConfig:
    latent_dim: int = 32
    image_size: int = 64  # 32 or 64
    channels: int = 3
    beta: float = 4.0  # weight of the KL term; 1.0 is a plain VAE
    ngf: int = 32  # decoder width at its last stage (as DCGAN's ngf)
    g_widths: tuple[int, ...] | None = None  # decoder widths after structured pruning

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        self.decoder_config()  # validates size, channels and widths

    def decoder_config(self) -> DCGANConfig:
        return DCGANConfig(latent_dim=self.latent_dim, image_size=self.image_size,
                           channels=self.channels, ngf=self.ngf, g_widths=self.g_widths)


class Encoder(nn.Module):
    def __init__(self, cfg: BetaVAEConfig):
        super().__init__()
        widths = [32, 32, 64, 64][-(cfg.decoder_config().stages - 1):]  # 64 px: 4 convs
        layers: list[nn.Module] = []
        c_in = cfg.channels
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU(True)]  # side / 2
            c_in = c_out
        self.conv = nn.Sequential(*layers)  # (B, 64, 4, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, 256), nn.ReLU(True),
                                  nn.Linear(256, 2 * cfg.latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.conv(x)).chunk(2, dim=1)  # (B, nz) each
        return mu, logvar


class BetaVAE(nn.Module):
    def __init__(self, cfg: BetaVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Generator(cfg.decoder_config())

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decoder(z), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the posterior mean."""
        return self.decoder(self.encoder(x)[0])


def vae_loss(x, recon, mu, logvar, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image means of (total, reconstruction, KL)."""
    rec = ((recon - x) ** 2).flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()
    return rec + beta * kl, rec, kl
