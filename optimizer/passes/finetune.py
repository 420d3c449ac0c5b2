"""Fine-tune after pruning: continue the family's own training for a few epochs.

DCGAN: the (pruned) generator against a fresh discriminator; Beta-VAE: encoder and (pruned)
decoder on the VAE loss. Same data, optimizer settings and seed as the recipe's training.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    epochs: int = 1

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def run(model, cfg: Config, ctx):
    from ..families import FAMILY_IMPL

    return FAMILY_IMPL[ctx.recipe.family].finetune(model, ctx, cfg.epochs)
