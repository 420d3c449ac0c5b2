"""Beta-VAE (Higgins et al., 2017): trained on the VAE loss, deployed as its decoder (the
DCGAN generator definition), so pruning, the sub-pixel rewrite and INT8 apply unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..evaluate import GraphGenerator, ssim
from ..models.beta_vae import BetaVAE, BetaVAEConfig
from ..models.dcgan import Generator
from ..train_vae import train_beta_vae
from .base import Context
from .image import ImageFamily


class BetaVAEFamily(ImageFamily):
    name = "beta-vae"
    config = BetaVAEConfig
    build = staticmethod(BetaVAE)

    def baseline(self, ctx: Context):
        vae, history = train_beta_vae(ctx.data.train, ctx.data.val, ctx.recipe.model_config,
                                      ctx.recipe.train, ctx.seed, ctx.progress)
        return vae, self.train_technique(ctx, {
            "steps": history.steps, "best_epoch": history.best_epoch,
            "best_val_loss": history.val_loss[history.best_epoch],
            "selected_by": "validation loss"})

    def deployable(self, model: BetaVAE) -> Generator:
        return model.decoder

    def with_deployable(self, model: BetaVAE, decoder: nn.Module) -> BetaVAE:
        new = copy.deepcopy(model)
        new.decoder = decoder
        if isinstance(decoder, Generator):  # keep the config in step with a pruned decoder
            new.cfg = replace(model.cfg, g_widths=decoder.cfg.g_widths)
        return new

    def finetune(self, model: BetaVAE, ctx: Context, epochs: int):
        """Encoder and (pruned) decoder together, on the VAE loss."""
        train = replace(ctx.recipe.train, epochs=epochs)
        vae, _ = train_beta_vae(ctx.data.train, ctx.data.val, model.cfg, train, ctx.seed,
                                ctx.progress, vae=model)
        return vae, {}

    def quality(self, model: BetaVAE, path: Path, ctx: Context) -> dict:
        """FID of prior samples, and SSIM of reconstructions decoded by the exported graph."""
        decoder = GraphGenerator(path, model.cfg.latent_dim)
        with torch.no_grad():
            mu, _ = model.encoder(ctx.data.val)
        recon = decoder.decode(mu.numpy())
        return {"fid": self.fid_of(path, model.cfg.latent_dim, ctx),
                "ssim": ssim(ctx.data.val, recon)}


FAMILY = BetaVAEFamily()
