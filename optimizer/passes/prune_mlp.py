"""MLP channel pruning: the intermediate size of every block shrinks, physically.

A channel of a transformer MLP is one column of its up (and gate) projection and the matching
row of its down projection. Its importance is what it contributes to the block's output on real
tokens: the mean |activation| entering the down projection, over a few training batches, times
the norm of its down-projection weights (a structured cousin of Wanda, Sun et al. 2023). Every
layer loses the same fraction, so the shape stays regular; the least important channels of each
layer go. Kept apart: scoring (`channel_importance`, a pure function), the plan, and the
surgery (the family's `keep_mlp`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..models.dcgan import count_parameters
from .structured import PruneConfig, recover

STAGE = "model"
FAMILIES = ("gpt2", "llama")


class Config(PruneConfig):
    """ratio: the fraction of each layer's intermediate channels removed, in [0.1, 0.9]."""

    MAX_RATIO = 0.9


def channel_importance(mean_abs_activation: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """(channels,) mean |a_i| times ||W_down[:, i]||_2, with W_down as (out, channels)."""
    return mean_abs_activation * down.norm(dim=0)


@torch.no_grad()
def activations(model, family, data: torch.Tensor, batch_size: int, batches: int) -> list:
    """Mean |activation| per intermediate channel of every block, on training batches."""
    blocks = list(family.blocks(model))
    sums = [None] * len(blocks)
    counts = [0] * len(blocks)
    hooks = []
    for i, block in enumerate(blocks):
        def hook(module, args, i=i):
            a = args[0].detach().abs().flatten(0, -2)  # (tokens, channels)
            sums[i] = a.sum(0) if sums[i] is None else sums[i] + a.sum(0)
            counts[i] += a.shape[0]
        hooks.append(family.mlp_down(block)[0].register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for b in range(min(batches, max(1, len(data) // batch_size))):
            model(input_ids=data[b * batch_size:(b + 1) * batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [s / c for s, c in zip(sums, counts)]


def run(subject, cfg: Config, ctx):
    family, model = ctx.family, subject.model
    means = activations(model, family, ctx.data.train, ctx.recipe.train.batch_size, cfg.batches)
    before, widths = count_parameters(model), []
    for block, mean in zip(family.blocks(model), means):
        scores = channel_importance(mean, family.mlp_down(block)[1].detach())
        count = max(1, round((1 - cfg.ratio) * len(scores)))
        keep = torch.topk(scores, count).indices.sort().values.tolist()
        family.keep_mlp(block, keep)
        widths.append((len(scores), count))
    info = {"intermediate_before": [w for w, _ in widths],
            "intermediate_after": [k for _, k in widths],
            "importance": "mean |activation| x ||W_down column||, on training batches",
            "params_before": before, "params_after": count_parameters(model)}
    return replace(subject, model=recover(model, cfg, ctx, info), info=info)
