"""Beta-VAE training loop: Adam, best checkpoint by validation loss."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .distributed import pick_device
from .models.beta_vae import BetaVAE, BetaVAEConfig, vae_loss
from .recipe import TrainConfig


@dataclass
class VaeHistory:
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    steps: int


@torch.no_grad()
def validation_loss(vae: BetaVAE, images: torch.Tensor, beta: float, seed: int = 0) -> float:
    """Mean loss on held-out images (fixed noise, so epochs compare fairly)."""
    vae.eval()
    torch.manual_seed(seed)
    device = next(vae.parameters()).device
    total = 0.0
    for i in range(0, len(images), 256):
        x = images[i:i + 256].to(device)
        total += vae_loss(x, *vae(x), beta)[0].item() * len(x)
    return total / len(images)


def train_beta_vae(images: torch.Tensor, val_images: torch.Tensor, cfg: BetaVAEConfig,
                   train: TrainConfig, seed: int, progress: bool = True,
                   vae: BetaVAE | None = None) -> tuple[BetaVAE, VaeHistory]:
    """Train (or fine-tune `vae`) on (N, C, S, S) images in [-1, 1]; keep the best epoch."""
    device = pick_device(train.device)  # CUDA when present (train.device: auto)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    vae = (vae if vae is not None else BetaVAE(cfg)).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    batches = max(1, len(images) // train.batch_size)
    history = VaeHistory([], [], -1, 0)
    best, best_loss = copy.deepcopy(vae.state_dict()), float("inf")
    bar = tqdm(total=train.epochs * batches, desc="train beta-vae", unit="step",
               disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for epoch in range(train.epochs):
        vae.train()
        order = torch.randperm(len(images), generator=shuffle)
        running = 0.0
        for b in range(batches):
            x = images[order[b * train.batch_size:(b + 1) * train.batch_size]].to(device)
            loss, rec, kl = vae_loss(x, *vae(x), cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            history.steps += 1
            bar.update(1)
            bar.set_postfix(rec=f"{rec.item():.1f}", kl=f"{kl.item():.1f}", refresh=False)
        history.train_loss.append(running / batches)
        history.val_loss.append(validation_loss(vae, val_images, cfg.beta))
        if history.val_loss[-1] < best_loss:
            best_loss, history.best_epoch = history.val_loss[-1], epoch
            best = copy.deepcopy(vae.state_dict())
    bar.close()
    vae.to("cpu").load_state_dict(best)
    return vae.eval(), history
