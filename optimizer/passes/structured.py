"""What the structured decoder pruners share: a ratio, the batches their importance is measured
on, and optional recovery training after the cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PruneConfig:
    ratio: float  # the fraction removed, within [0.1, MAX_RATIO]
    batches: int = 8  # training batches over which importance is measured
    finetune_epochs: int = 0  # recovery training after the cut

    MAX_RATIO = 0.9

    def __post_init__(self):
        if not 0.1 <= self.ratio <= self.MAX_RATIO:
            raise ValueError(f"ratio must be within [0.1, {self.MAX_RATIO}], got {self.ratio}")
        if self.batches < 1 or self.finetune_epochs < 0:
            raise ValueError("batches must be >= 1 and finetune_epochs >= 0")


def recover(model, cfg: PruneConfig, ctx, info: dict):
    """Fine-tune after the cut when the recipe asks; its history goes into `info`."""
    if cfg.finetune_epochs:
        model, info["finetune"] = ctx.family.finetune(model, ctx, cfg.finetune_epochs)
    return model
