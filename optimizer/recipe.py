"""Recipes: YAML files parsed into frozen dataclasses, unknown or mistyped keys refused.

A recipe trains a baseline per seed, then derives each sweep point from it by a chain of
registered passes (optimizer/passes), evaluates every model the same way, applies the quality
gate, and writes bundles and results tables.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .models.beta_vae import BetaVAEConfig
from .models.dcgan import DCGANConfig

FAMILIES: dict[str, type] = {"dcgan": DCGANConfig, "beta-vae": BetaVAEConfig}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # digits (bundled), cifar10, folder / celeba (local paths)
    root: str | None = None  # local path for datasets that live on disk
    options: dict = field(default_factory=dict)  # loader options: cifar10 {split}, folder {limit}
    val_fraction: float = 0.1  # held out for validation loss, FID reference and SSIM


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-4  # Adam, as in the DCGAN paper
    beta1: float = 0.5
    beta2: float = 0.999
    eval_every: int = 0  # DCGAN: score FID every N epochs and keep the best (0: keep the last)


@dataclass(frozen=True)
class EvaluateConfig:
    fid_samples: int = 1000  # generated images per FID (the reference is the held-out split)
    inception_weights: str | None = None  # local Inception file; else a rotation extractor
    ram_batch: int = 16  # batch size of the peak-RAM probe


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18  # the dynamo exporter's default; ORT 1.32 runs every op of it on CPU
    atol: float = 1e-4  # max |ORT - PyTorch| on the Tanh output range [-1, 1]
    validation_batches: tuple[int, ...] = (1, 4)  # batch sizes checked after export


@dataclass(frozen=True)
class GateConfig:
    """Limits against the same seed's baseline; a point over them gets no bundle."""

    max_fid_increase: float | None = None  # absolute FID points
    max_ssim_drop: float | None = None  # absolute SSIM (Beta-VAE)


@dataclass(frozen=True)
class PointConfig:
    name: str
    passes: tuple[dict, ...] = ()  # each {pass: <registered name>, ...its config}


@dataclass(frozen=True)
class Recipe:
    name: str  # bundle name (points become <name>-<point>)
    family: str  # dcgan | beta-vae
    seed: int = 0
    seeds: tuple[int, ...] = ()  # several seeds: every model per seed, paired statistics
    model: dict = field(default_factory=dict)  # the family's config (DCGANConfig, BetaVAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    points: tuple[PointConfig, ...] = ()
    gate: GateConfig = field(default_factory=GateConfig)
    bundles: str = "first-seed"  # which models become bundles: first-seed | none
    mlflow: bool = True  # track runs in MLflow (local file store ./mlruns unless MLFLOW_TRACKING_URI)

    @property
    def all_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    @property
    def model_config(self):
        return _build(FAMILIES[self.family], self.model, "model")


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
    values = {key: _check(hints[key], value, f"{where}.{key}" if where else key)
              for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe: '{where or 'top level'}': {exc}") from None


def _check(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
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
    if not isinstance(value, tuple(typing.get_origin(a) or a for a in allowed
                                   if a is not type(None))):
        raise RecipeError(f"recipe: '{path}' must be {_names(allowed)}, got {value!r}")
    return value


def _names(types_) -> str:
    return " or ".join(getattr(t, "__name__", str(t)) for t in types_ if t is not type(None))


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from None
    recipe = _build(Recipe, data, "")
    if recipe.family not in FAMILIES:
        raise RecipeError(f"recipe: family {recipe.family!r} is not supported; known: "
                          f"{sorted(FAMILIES)}")
    recipe.model_config  # validate the family's model config now, with its key paths
    if recipe.bundles not in ("first-seed", "none"):
        raise RecipeError(f"recipe: 'bundles' must be 'first-seed' or 'none', got {recipe.bundles!r}")
    names = [p.name for p in recipe.points]
    if len(set(names)) != len(names) or "baseline" in names:
        raise RecipeError(f"recipe: point names must be unique and not 'baseline', got {names}")
    for point in recipe.points:
        for i, step in enumerate(point.passes):
            if "pass" not in step:
                raise RecipeError(f"recipe: points[{point.name}].passes[{i}] needs a 'pass' key")
    return recipe
