"""DCGAN (Radford et al., 2016): the generator is trained adversarially and deployed as it is."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..evaluate import fid
from ..models.dcgan import DCGANConfig, Generator
from ..train_gan import train_dcgan
from .base import Context
from .image import ImageFamily


class DCGANFamily(ImageFamily):
    name = "dcgan"
    config = DCGANConfig
    build = staticmethod(Generator)

    def baseline(self, ctx: Context):
        recipe, data = ctx.recipe, ctx.data
        def fid_of_generator(gen: Generator) -> float:
            with torch.no_grad():
                z = torch.randn(recipe.evaluate.fid_samples, gen.cfg.latent_dim,
                                generator=torch.Generator().manual_seed(ctx.seed))
                return fid(data.extractor, data.val, gen(z))

        # best checkpoint by FID of the PyTorch generator, or the last epoch
        score = fid_of_generator if recipe.train.eval_every else None
        gen, history = train_dcgan(data.train, recipe.model_config, recipe.train, ctx.seed,
                                   ctx.progress, score=score, eval_every=recipe.train.eval_every)
        return gen, self.train_technique(ctx, {
            "steps": history.steps, "final_d_loss": history.d_loss[-1],
            "final_g_loss": history.g_loss[-1], "best_epoch": history.best_epoch,
            "selected_by": "fid" if score else "last epoch"})

    def finetune(self, model: Generator, ctx: Context, epochs: int):
        """The (pruned) generator against a fresh discriminator, the recipe's optimizer."""
        train = replace(ctx.recipe.train, epochs=epochs)
        gen, history = train_dcgan(ctx.data.train, model.cfg, train, ctx.seed, ctx.progress,
                                   gen=model)
        return gen, {}


FAMILY = DCGANFamily()
