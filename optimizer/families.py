"""What differs between model families, described once: how to train, fine-tune and score
them, and which module is deployed (the DCGAN generator; the Beta-VAE decoder)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .evaluate import Extractor, OnnxGenerator, fid, ssim
from .models.beta_vae import BetaVAE
from .models.dcgan import Generator
from .recipe import Recipe
from .train_gan import train_dcgan
from .train_vae import train_beta_vae


@dataclass
class Context:
    """Everything a pass or an evaluation needs beyond the model itself."""

    recipe: Recipe
    train_images: torch.Tensor  # (N, C, S, S) in [-1, 1]
    val_images: torch.Tensor
    extractor: Extractor
    seed: int
    progress: bool = True


def fid_of(path: Path, latent_dim: int, ctx: Context) -> float:
    """FID of the exported graph's samples against the held-out images."""
    n = ctx.recipe.evaluate.fid_samples
    fake = OnnxGenerator(path, latent_dim).sample(n, seed=10_000 + ctx.seed)
    return fid(ctx.extractor, ctx.val_images, fake)


class DCGANFamily:
    name = "dcgan"

    @staticmethod
    def train(ctx: Context):
        recipe = ctx.recipe
        score = None
        if recipe.train.eval_every:  # best checkpoint by FID of the PyTorch generator
            def score(gen: Generator) -> float:
                with torch.no_grad():
                    z = torch.randn(recipe.evaluate.fid_samples, gen.cfg.latent_dim,
                                    generator=torch.Generator().manual_seed(ctx.seed))
                    return fid(ctx.extractor, ctx.val_images, gen(z))
        gen, history = train_dcgan(ctx.train_images, recipe.model_config, recipe.train, ctx.seed,
                                   ctx.progress, score=score, eval_every=recipe.train.eval_every)
        return gen, {"steps": history.steps, "final_d_loss": history.d_loss[-1],
                     "final_g_loss": history.g_loss[-1], "best_epoch": history.best_epoch,
                     "selected_by": "fid" if score else "last epoch"}

    @staticmethod
    def deployable(model: Generator) -> Generator:
        return model

    @staticmethod
    def with_deployable(model: Generator, gen: nn.Module) -> nn.Module:
        return gen

    @staticmethod
    def finetune(model: Generator, ctx: Context, epochs: int) -> Generator:
        train = replace(ctx.recipe.train, epochs=epochs)
        gen, _ = train_dcgan(ctx.train_images, model.cfg, train, ctx.seed, ctx.progress, gen=model)
        return gen

    @staticmethod
    def quality(model: Generator, path: Path, ctx: Context) -> dict:
        return {"fid": fid_of(path, model.cfg.latent_dim, ctx)}


class BetaVAEFamily:
    name = "beta-vae"

    @staticmethod
    def train(ctx: Context):
        vae, history = train_beta_vae(ctx.train_images, ctx.val_images, ctx.recipe.model_config,
                                      ctx.recipe.train, ctx.seed, ctx.progress)
        return vae, {"steps": history.steps, "best_epoch": history.best_epoch,
                     "best_val_loss": history.val_loss[history.best_epoch],
                     "selected_by": "validation loss"}

    @staticmethod
    def deployable(model: BetaVAE) -> Generator:
        return model.decoder

    @staticmethod
    def with_deployable(model: BetaVAE, decoder: nn.Module) -> BetaVAE:
        new = copy.deepcopy(model)
        new.decoder = decoder
        if isinstance(decoder, Generator):  # keep the config in step with a pruned decoder
            new.cfg = replace(model.cfg, g_widths=decoder.cfg.g_widths)
        return new

    @staticmethod
    def finetune(model: BetaVAE, ctx: Context, epochs: int) -> BetaVAE:
        train = replace(ctx.recipe.train, epochs=epochs)
        vae, _ = train_beta_vae(ctx.train_images, ctx.val_images, model.cfg, train, ctx.seed,
                                ctx.progress, vae=model)
        return vae

    @staticmethod
    def quality(model: BetaVAE, path: Path, ctx: Context) -> dict:
        """FID of prior samples, and SSIM of reconstructions decoded by the exported graph."""
        decoder = OnnxGenerator(path, model.cfg.latent_dim)
        with torch.no_grad():
            mu, _ = model.encoder(ctx.val_images)
        recon = decoder.decode(mu.numpy())
        return {"fid": fid_of(path, model.cfg.latent_dim, ctx),
                "ssim": ssim(ctx.val_images, recon)}


FAMILY_IMPL = {"dcgan": DCGANFamily, "beta-vae": BetaVAEFamily}
