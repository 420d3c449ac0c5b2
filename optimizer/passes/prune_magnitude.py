"""Unstructured magnitude pruning (torch.nn.utils.prune), for the sparsity study.

Zeroes the smallest-magnitude weights of the family's prunable layers (global L1 ranking: the
image generators' conv layers, the decoders' attention and MLP matrices) and makes the zeros
permanent. Shapes do not change, so dense kernels (ONNX Runtime's, PyTorch's) do not get
faster and the ONNX file does not shrink; only a sparse kernel or compression could profit. The
pass reports the sparsity it reached, and over which layers, so tables can say exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn
from torch.nn.utils import prune


@dataclass(frozen=True)
class Config:
    ratio: float  # fraction of conv weights set to zero, in [0.1, 0.9]

    def __post_init__(self):
        if not 0.1 <= self.ratio <= 0.9:
            raise ValueError(f"ratio must be within [0.1, 0.9], got {self.ratio}")


def conv_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def sparsity(model_or_layers: nn.Module | list[nn.Module]) -> float:
    """Fraction of weights that are exactly zero: of a model's conv layers, or of given layers."""
    layers = (conv_layers(model_or_layers) if isinstance(model_or_layers, nn.Module)
              else model_or_layers)
    weights = [m.weight.detach() for m in layers]
    return float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))


def prune_global(layers: list[nn.Module], ratio: float) -> None:
    """Zero the `ratio` smallest-magnitude weights across `layers` (one global L1 ranking)."""
    params = [(m, "weight") for m in layers]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
    for module, name in params:
        prune.remove(module, name)  # fold the mask into the weight: a plain dense tensor again


STAGE = "model"
FAMILIES = None  # every family names its prunable layers (magnitude_layers)


def run(subject, cfg: Config, ctx):
    family = ctx.family
    module = family.deployable(subject.model).eval()
    layers, scope = family.magnitude_layers(module)
    prune_global(layers, cfg.ratio)
    return replace(subject, model=family.with_deployable(subject.model, module),
                   info={"sparsity": sparsity(layers), "scope": scope})
