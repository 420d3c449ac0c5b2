"""Structured channel pruning of a DCGAN generator: channels are physically removed.

What the ratio means (`target`):
- `channels` (default): the fraction of output channels removed from *every hidden layer*.
  Parameters then shrink by about 1-(1-r)^2, because each inner weight loses rows and columns:
  r = 0.5 turns Radford's 64x64 generator (ngf 64, 3.58 M parameters) into ngf 32 (1.10 M).
- `params`: the fraction of the generator's *parameters* removed, as the paper's
  "50%: 4.2 M -> 2.1 M" reads. The per-layer channel fraction that achieves it is solved for
  (about 0.33 of the channels for 50% of the parameters).
The image channels (the last layer's output) are never pruned.

Kept apart, as in Torch-Pruning: what is coupled (`plan`: each hidden ConvTranspose output,
its BatchNorm, and the next ConvTranspose input form one group), what to remove (`importance`,
a pure function), and how to cut (`_slice_*`, per layer type).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..models.dcgan import DCGANConfig, Generator, count_parameters


@dataclass(frozen=True)
class Config:
    ratio: float  # in [0.1, 0.9]; see `target`
    target: str = "channels"  # "channels" (per hidden layer) or "params" (whole generator)

    def __post_init__(self):
        if not 0.1 <= self.ratio <= 0.9:
            raise ValueError(f"ratio must be within [0.1, 0.9], got {self.ratio}")
        if self.target not in ("channels", "params"):
            raise ValueError(f"target must be 'channels' or 'params', got {self.target!r}")


@dataclass(frozen=True)
class Group:
    """One prunable set of coupled channels: output of conv `producer`, BN, input of `consumer`."""

    producer: int  # index into generator.main
    norm: int
    consumer: int
    keep: tuple[int, ...]  # channel indices kept, ascending


def importance(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Score per output channel: L1 norm of its ConvTranspose filters times |BN gamma|.

    `weight` is (C_in, C_out, kH, kW) as in nn.ConvTranspose2d; `gamma` is (C_out,). A channel
    whose BatchNorm scale is near zero contributes little however large its filters are.
    """
    return weight.abs().sum(dim=(0, 2, 3)) * gamma.abs()


def plan(gen: Generator, keep_fraction: float) -> list[Group]:
    layers = list(gen.main)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.ConvTranspose2d)]
    groups = []
    for producer, consumer in zip(convs, convs[1:]):
        norm = producer + 1
        assert isinstance(layers[norm], nn.BatchNorm2d), "DCGAN: ConvT is followed by BatchNorm"
        scores = importance(layers[producer].weight.detach(), layers[norm].weight.detach())
        count = max(1, round(keep_fraction * len(scores)))
        keep = torch.topk(scores, count).indices.sort().values
        groups.append(Group(producer, norm, consumer, tuple(keep.tolist())))
    return groups


def _slice_conv_transpose(conv: nn.ConvTranspose2d, keep_in=None, keep_out=None):
    weight = conv.weight.detach()  # (C_in, C_out, k, k)
    if keep_in is not None:
        weight = weight[list(keep_in)]
    if keep_out is not None:
        weight = weight[:, list(keep_out)]
    new = nn.ConvTranspose2d(weight.shape[0], weight.shape[1], conv.kernel_size, conv.stride,
                             conv.padding, bias=conv.bias is not None)
    new.weight.data.copy_(weight)
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.detach()[list(keep_out)] if keep_out else conv.bias.detach())
    return new


def _slice_batch_norm(bn: nn.BatchNorm2d, keep) -> nn.BatchNorm2d:
    idx = list(keep)
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    for name in ("weight", "bias"):
        getattr(new, name).data.copy_(getattr(bn, name).detach()[idx])
    for name in ("running_mean", "running_var"):
        getattr(new, name).copy_(getattr(bn, name)[idx])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def apply(gen: Generator, groups: list[Group]) -> Generator:
    """A new, smaller Generator with the planned channels removed (weights copied)."""
    layers = list(gen.main)
    keep_out = {g.producer: g.keep for g in groups}
    keep_in = {g.consumer: g.keep for g in groups}
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.ConvTranspose2d) and (i in keep_out or i in keep_in):
            layers[i] = _slice_conv_transpose(layer, keep_in.get(i), keep_out.get(i))
    for g in groups:
        layers[g.norm] = _slice_batch_norm(layers[g.norm], g.keep)
    cfg = DCGANConfig(**{**vars(gen.cfg), "g_widths": tuple(len(g.keep) for g in groups)})
    pruned = Generator(cfg)
    pruned.main = nn.Sequential(*layers)
    return pruned.train(gen.training)


def _solve_keep_fraction(gen: Generator, params_removed: float) -> float:
    """Bisect the per-layer keep fraction whose pruned parameter count is closest to target."""
    target = (1 - params_removed) * count_parameters(gen)
    low, high = 0.01, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        if count_parameters(apply(gen, plan(gen, mid))) > target:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def prune(gen: Generator, cfg: Config) -> Generator:
    keep = 1 - cfg.ratio if cfg.target == "channels" else _solve_keep_fraction(gen, cfg.ratio)
    return apply(gen, plan(gen, keep))


STAGE = "model"
FAMILIES = ("dcgan", "beta-vae")


def run(subject, cfg: Config, ctx):
    family = ctx.family
    gen = prune(family.deployable(subject.model).eval(), cfg)
    return replace(subject, model=family.with_deployable(subject.model, gen), info={})
