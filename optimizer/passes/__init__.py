"""Optimizer passes: small registered units, each with a typed config, composed by recipes.

A pass is a module under optimizer/passes/ exposing `Config` (a frozen dataclass) and
`run(subject, cfg, ...) -> result`. Kinds: `torch` passes take and return the deployable
nn.Module; `train` passes also take the training context; `onnx` passes (last in a chain) turn
the module into an ONNX file in a work directory and return it with a report. Names map to modules imported lazily (as in
Olive's pass table), so using one pass never imports another pass's dependencies.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from ..errors import RecipeError

# name -> (module, kind)
REGISTRY: dict[str, tuple[str, str]] = {
    "prune_channels": ("optimizer.passes.prune_channels", "torch"),
    "prune_magnitude": ("optimizer.passes.prune_magnitude", "torch"),
    "subpixel": ("optimizer.passes.subpixel", "torch"),
    "finetune": ("optimizer.passes.finetune", "train"),
    "qat": ("optimizer.passes.qat", "train"),
    "quantize": ("optimizer.passes.quantize", "onnx"),
}


def get_pass(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise RecipeError(f"unknown pass {name!r}; registered: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name][0])


def make_config(name: str, params: dict[str, Any]):
    """The pass's typed config from recipe parameters; unknown keys are refused by name."""
    return build_config(name, get_pass(name).Config, params)


def build_config(name: str, config_cls: type, params: dict[str, Any]):
    """Construct pass `name`'s config dataclass, naming unknown keys and bad values."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RecipeError(f"pass {name!r}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    try:
        return config_cls(**params)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"pass {name!r}: {exc}") from None
