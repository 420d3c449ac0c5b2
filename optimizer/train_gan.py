"""GAN training loop (DCGAN recipe: Adam, BCE with the non-saturating generator loss)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .distributed import pick_device
from .models.dcgan import DCGANConfig, Discriminator, Generator
from .recipe import TrainConfig


@dataclass
class GanHistory:
    d_loss: list[float]  # mean discriminator loss per epoch
    g_loss: list[float]  # mean generator loss per epoch
    steps: int
    scores: dict[int, float] | None = None  # epoch -> score (e.g. FID) when a scorer is given
    best_epoch: int = -1


def train_dcgan(images: torch.Tensor, model_cfg: DCGANConfig, train: TrainConfig, seed: int,
                progress: bool = True, gen: Generator | None = None,
                score: Callable[[Generator], float] | None = None,
                eval_every: int = 1) -> tuple[Generator, GanHistory]:
    """Train G and D on (N, C, S, S) images in [-1, 1]; return G in eval mode and the losses.

    `gen` continues training an existing (e.g. pruned) generator against a fresh discriminator.
    With `score` (lower is better, e.g. FID), G is scored every `eval_every` epochs and at the
    end, and the best-scoring generator is returned.
    """
    if len(images) < train.batch_size:
        raise ValueError(f"dataset has {len(images)} images, fewer than one batch "
                         f"({train.batch_size})")
    device = pick_device(train.device)  # CUDA when present (train.device: auto)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    gen = (gen.train() if gen is not None else Generator(model_cfg)).to(device)
    disc = Discriminator(model_cfg).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    batches = len(images) // train.batch_size  # drop the ragged last batch: BatchNorm needs >1
    history = GanHistory([], [], 0, {} if score else None)
    best = None
    bar = tqdm(total=train.epochs * batches, desc="train dcgan", unit="step",
               disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for epoch in range(train.epochs):
        order = torch.randperm(len(images), generator=shuffle)
        d_sum = g_sum = 0.0
        for b in range(batches):
            real = images[order[b * train.batch_size:(b + 1) * train.batch_size]].to(device)
            z = torch.randn(len(real), model_cfg.latent_dim, device=device)
            fake = gen(z)
            # D: real -> 1, fake -> 0 (fake detached so G gets no gradient here)
            d_real, d_fake = disc(real), disc(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G: make D call fakes real (non-saturating loss)
            g_out = disc(fake)
            g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_sum += d_loss.item()
            g_sum += g_loss.item()
            history.steps += 1
            bar.update(1)
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}", refresh=False)
        history.d_loss.append(d_sum / batches)
        history.g_loss.append(g_sum / batches)
        if score and ((epoch + 1) % eval_every == 0 or epoch == train.epochs - 1):
            history.scores[epoch] = score(gen.eval().to("cpu"))  # scored where it ships
            gen.train().to(device)
            if best is None or history.scores[epoch] < history.scores[history.best_epoch]:
                history.best_epoch, best = epoch, copy.deepcopy(gen.state_dict())
    bar.close()
    gen.to("cpu")
    if best is not None:
        gen.load_state_dict(best)
    return gen.eval(), history
