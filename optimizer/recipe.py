"""Recipes: YAML files parsed into frozen dataclasses, unknown or mistyped keys refused."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .models.dcgan import DCGANConfig


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # digits (bundled)
    root: str | None = None  # local path for datasets that live on disk


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-4  # Adam, as in the DCGAN paper
    beta1: float = 0.5
    beta2: float = 0.999


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18  # the dynamo exporter's default; ORT 1.32 runs every op of it on CPU
    atol: float = 1e-4  # max |ORT - PyTorch| on the Tanh output range [-1, 1]
    validation_batches: tuple[int, ...] = (1, 4)  # batch sizes checked after export


@dataclass(frozen=True)
class Recipe:
    name: str  # bundle name
    family: str  # dcgan
    seed: int = 0
    model: DCGANConfig = field(default_factory=DCGANConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def _build(cls: type, data: Any, where: str):
    """Construct dataclass `cls` from a mapping, checking keys and scalar types."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: '{where or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"recipe: unknown key(s) {unknown} in '{where or 'top level'}'; "
                          f"known: {sorted(names)}")
    values = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, path)
        else:
            values[key] = _check(hint, value, path)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe: '{where or 'top level'}': {exc}") from None


def _check(hint: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise RecipeError(f"recipe: '{path}' must be a list, got {value!r}")
        return tuple(_check(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    allowed = args if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if len(allowed) == 2 and type(None) in allowed:  # Optional[X]: check against X
        return _check(next(a for a in allowed if a is not type(None)), value, path)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        raise RecipeError(f"recipe: '{path}' must be {_names(allowed)}, got {value!r}")
    if not isinstance(value, tuple(a for a in allowed if a is not type(None))):
        raise RecipeError(f"recipe: '{path}' must be {_names(allowed)}, got {value!r}")
    return value


def _names(types) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in types if t is not type(None))


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from None
    recipe = _build(Recipe, data, "")
    if recipe.family != "dcgan":
        raise RecipeError(f"recipe: family {recipe.family!r} is not supported; known: ['dcgan']")
    return recipe
