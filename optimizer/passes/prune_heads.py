"""Attention-head pruning (Michel et al., 2019), physically: the least important heads go.

Importance of a head is |dL/d gate|, a gate of 1 multiplying the head's output where it enters
the attention's output projection, summed over training batches and L2-normalised within each
layer. The unit removed respects the layer's key/value groups: a head of multi-head attention
(GPT-2), or under grouped-query attention (the Llama family) a whole group, one KV head with the
query heads that read it (importance summed over them), so every remaining query head keeps its
KV head and the cache shrinks with the compute. `ratio` is the fraction of all units removed;
every layer keeps at least one. Kept apart: scoring (`unit_importance`, a pure function of the
gradients), the plan (`plan`), and the surgery (the family's `keep_units`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..models.dcgan import count_parameters
from .structured import PruneConfig, recover
from ..text.train import lm_loss

STAGE = "model"
FAMILIES = ("gpt2", "llama")


class Config(PruneConfig):
    """ratio: the fraction of all attention units (heads, or KV groups) removed, in [0.1, 0.7]."""

    MAX_RATIO = 0.7


def unit_importance(head_grads: torch.Tensor, heads_per_unit: int) -> torch.Tensor:
    """|dL/dgate| per query head (accumulated) -> per unit, L2-normalised within the layer."""
    units = head_grads.view(-1, heads_per_unit).sum(1)
    return units / (units.norm() + 1e-12)


def importance(model, family, data: torch.Tensor, batch_size: int, batches: int) -> list:
    blocks = list(family.blocks(model))
    shapes = [family.attention_units(b) for b in blocks]  # (attn, units, per unit, head_dim)
    gates = [torch.ones(units * per, requires_grad=True) for _, units, per, _ in shapes]
    hooks = []
    for block, gate, (_, _, _, d) in zip(blocks, gates, shapes):
        def hook(module, args, gate=gate, d=d):
            return (args[0] * gate.repeat_interleave(d),)
        hooks.append(family.attention_output(block).register_forward_pre_hook(hook))
    grads = [torch.zeros(len(g)) for g in gates]
    was_training = model.training
    model.eval()
    try:
        for i in range(min(batches, max(1, len(data) // batch_size))):
            ids = data[i * batch_size:(i + 1) * batch_size]
            loss = lm_loss(model(input_ids=ids).logits, ids)
            for acc, g in zip(grads, torch.autograd.grad(loss, gates)):
                acc += g.abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [unit_importance(g, per) for g, (_, _, per, _) in zip(grads, shapes)]


def plan(scores: list[torch.Tensor], ratio: float) -> dict[int, list[int]]:
    """Units to remove per layer: globally least important first, one kept in every layer."""
    ranked = sorted((float(s), layer, unit) for layer, imp in enumerate(scores)
                    for unit, s in enumerate(imp))
    target = round(ratio * len(ranked))
    left = [len(imp) for imp in scores]
    removed: dict[int, list[int]] = {}
    for _, layer, unit in ranked:
        if sum(len(v) for v in removed.values()) >= target:
            break
        if left[layer] > 1:
            removed.setdefault(layer, []).append(unit)
            left[layer] -= 1
    return removed


def run(subject, cfg: Config, ctx):
    family, model = ctx.family, subject.model
    scores = importance(model, family, ctx.data.train, ctx.recipe.train.batch_size, cfg.batches)
    removed = plan(scores, cfg.ratio)
    before = count_parameters(model)
    for layer, block in enumerate(family.blocks(model)):
        gone = set(removed.get(layer, []))
        if gone:
            family.keep_units(block, [u for u in range(len(scores[layer])) if u not in gone])
    layout = family.layout(model)
    info = {"units_before": sum(len(s) for s in scores),
            "units_removed": sum(len(v) for v in removed.values()),
            "unit": "head" if all(q == kv for q, kv in zip(layout.query_heads, layout.kv_heads))
            else "key/value group (a KV head and its query heads)",
            "heads_per_layer": list(layout.query_heads), "kv_heads_per_layer": list(layout.kv_heads),
            "removed": {str(k): sorted(v) for k, v in sorted(removed.items())},
            "importance": "Michel et al. 2019: |dL/dgate|, layer-normalised",
            "params_before": before, "params_after": count_parameters(model)}
    return replace(subject, model=recover(model, cfg, ctx, info), info=info)
