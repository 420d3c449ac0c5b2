"""Fine-tune (after pruning, say): continue the family's own training for a few epochs.

DCGAN: the (pruned) generator against a fresh discriminator; Beta-VAE: encoder and (pruned)
decoder on the VAE loss; decoders: language-model training on the recipe's corpus. Same data,
optimizer settings and seed as the recipe's training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

STAGE = "model"
FAMILIES = None  # every family fine-tunes its own way (Family.finetune)


@dataclass(frozen=True)
class Config:
    epochs: int = 1

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def run(subject, cfg: Config, ctx):
    model, info = ctx.family.finetune(subject.model, ctx, cfg.epochs)
    return replace(subject, model=model, info=info)
