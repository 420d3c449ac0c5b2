"""Recipes: YAML files parsed into frozen dataclasses, unknown or mistyped keys refused.

A recipe trains a baseline per seed, then derives each sweep point from it by a chain of
registered passes (optimizer/passes), evaluates every model the same way, applies the quality
gate, and writes bundles and results tables.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # images: digits (bundled), cifar10, folder / celeba (local paths);
    # text: pydoc (bundled), wikitext2, openwebtext (local paths)
    root: str | None = None  # local path for datasets that live on disk
    options: dict = field(default_factory=dict)  # cifar10 {split}, folder/openwebtext/pydoc {limit}
    val_fraction: float = 0.1  # held out for validation loss, FID reference and SSIM (text:
    # this fraction of documents for validation and as many for test, unless the corpus has splits)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-4  # Adam, as in the DCGAN paper
    beta1: float = 0.5
    beta2: float = 0.999
    eval_every: int = 0  # DCGAN: score FID every N epochs and keep the best (0: keep the last)
    block_size: int = 128  # text: tokens per training sequence
    device: str = "auto"  # where training runs: auto (CUDA when available), cpu, cuda


@dataclass(frozen=True)
class EvaluateConfig:
    fid_samples: int = 1000  # generated images per FID (the reference is the held-out split)
    inception_weights: str | None = None  # local Inception file; else a rotation extractor
    ram_batch: int = 16  # batch size of the peak-RAM probe
    # text
    ppl_window: int = 0  # perplexity window in tokens (0: the context length)
    ppl_stride: int = 0  # sliding-window stride (0: half the window); only new tokens are scored
    ppl_max_tokens: int = 0  # score at most this many test tokens (0: the whole test split)
    prompts: int = 16  # held-out prompts for BLEU (greedy) and distinct-n (sampled)
    prompt_tokens: int = 32
    continuation_tokens: int = 32  # generated and reference continuation length
    # text, cross-corpus: perplexity on this corpus's test split (tokenized with the model's
    # tokenizer) instead of the training corpus's, e.g. {dataset: wikitext2, root: ...} after
    # training on openwebtext; the training corpus's own test perplexity is kept beside it
    corpus: DataConfig | None = None


@dataclass(frozen=True)
class ExportConfig:
    """Overrides of the family's export spec (optimizer/families: opset and atol as data)."""

    opset: int | None = None  # None: the family's (18: the dynamo exporter's default)
    atol: float | None = None  # None: the family's (images 1e-4 on [-1, 1]; decoders 1e-3)
    validation_batches: tuple[int, ...] = (1, 4)  # image batch sizes checked after export


@dataclass(frozen=True)
class GateConfig:
    """Limits against the same seed's baseline; a point over them gets no bundle."""

    max_fid_increase: float | None = None  # absolute FID points
    max_ssim_drop: float | None = None  # absolute SSIM (Beta-VAE)
    max_perplexity_increase_pct: float | None = None  # text: relative to the baseline, in percent


@dataclass(frozen=True)
class PointConfig:
    name: str
    passes: tuple[dict, ...] = ()  # each {pass: <registered name>, ...its config}
    gate: GateConfig | None = None  # this point's limits instead of the recipe's (e.g. a student)


@dataclass(frozen=True)
class Recipe:
    name: str  # bundle name (points become <name>-<point>)
    family: str  # dcgan | beta-vae | gpt2 | llama (optimizer/families)
    seed: int = 0
    seeds: tuple[int, ...] = ()  # several seeds: every model per seed, paired statistics
    model: dict = field(default_factory=dict)  # the family's config (families/<name>.py)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    points: tuple[PointConfig, ...] = ()
    gate: GateConfig = field(default_factory=GateConfig)
    compare: tuple[tuple[str, ...], ...] = ()  # [point, reference] pairs, paired over seeds
    bundles: str = "first-seed"  # which models become bundles: first-seed | none
    mlflow: bool = True  # track runs in MLflow (local file store ./mlruns unless MLFLOW_TRACKING_URI)
    profile: str = ""  # the `profiles:` overlay applied (--profile / EDGEGEN_PROFILE), "" for none
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE applied after the profile, as given

    @property
    def all_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    @property
    def model_config(self):
        from .families import get_family

        return _build(get_family(self.family).config, self.model, "model")


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


PROFILE_ENV = "EDGEGEN_PROFILE"
TEXT_FAMILIES = ("gpt2", "llama")


def apply_profile(data: Any, profile: str | None) -> Any:
    """The recipe mapping with its `profiles: {<name>: <overlay>}` entry for `profile` deep-merged
    over it (mappings merge key by key; lists and scalars are replaced whole), and `profile:` set
    so the run records it (provenance, results method): a CI-sized figure never passes for the
    recipe's own. `profile` None reads EDGEGEN_PROFILE, and a recipe without that profile runs as
    written (one variable sizes a whole test run); a profile named explicitly must exist."""
    if not isinstance(data, dict):
        return data  # _build says what is wrong
    if "profile" in data:
        raise RecipeError("recipe: 'profile' is chosen when running (--profile, EDGEGEN_PROFILE), "
                          "not written in a recipe; overlays go under 'profiles'")
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise RecipeError(f"recipe: 'profiles' must map names to overlays, e.g. "
                          f"{{ci: {{train: {{epochs: 1}}}}}}, got {profiles!r}")
    explicit = profile is not None
    profile = os.environ.get(PROFILE_ENV, "") if profile is None else profile
    if not profile or (profile not in profiles and not explicit):
        return data
    if profile not in profiles:
        raise RecipeError(f"recipe: no profile {profile!r} (its profiles: {sorted(profiles)})")

    def merge(base: Any, over: Any) -> Any:
        if not (isinstance(base, dict) and isinstance(over, dict)):
            return copy.deepcopy(over)
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}

    return {**merge(data, profiles[profile]), "profile": profile}


def apply_overrides(data: Any, overrides: tuple[str, ...]) -> Any:
    """The recipe mapping with each `KEY=VALUE` set: KEY a dotted path (`train.epochs`,
    `model.checkpoint`; missing mappings are made), VALUE read as YAML (`1`, `[0]`, `x/y`). The
    list is recorded (`overrides:`) so the run's bundles and tables say what was changed."""
    if not overrides or not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=1")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML "
                              f"({getattr(exc, 'problem', None) or exc})") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part.strip(), {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node[parts[-1].strip()] = value
    return {**data, "overrides": list(overrides)}


def load_recipe(path: str | Path, profile: str | None = None,
                overrides: tuple[str, ...] = ()) -> Recipe:
    """Parse and check a recipe; `profile` as in apply_profile (None: EDGEGEN_PROFILE), then
    `overrides` as in apply_overrides."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and "overrides" in data:
        raise RecipeError("recipe: 'overrides' are given when running (--set KEY=VALUE), not "
                          "written in a recipe")
    recipe = _build(Recipe, apply_overrides(apply_profile(data, profile), tuple(overrides)), "")
    recipe.model_config  # the family exists, and its model config is valid (with key paths)
    if recipe.evaluate.corpus is not None and recipe.family not in TEXT_FAMILIES:
        raise RecipeError(f"recipe: 'evaluate.corpus' (perplexity on another corpus) applies to "
                          f"the text families {list(TEXT_FAMILIES)}, not {recipe.family!r}")
    if recipe.bundles not in ("first-seed", "none"):
        raise RecipeError(f"recipe: 'bundles' must be 'first-seed' or 'none', got {recipe.bundles!r}")
    names = [p.name for p in recipe.points]
    if len(set(names)) != len(names) or "baseline" in names:
        raise RecipeError(f"recipe: point names must be unique and not 'baseline', got {names}")
    for pair in recipe.compare:
        if len(pair) != 2 or any(p not in names + ["baseline"] for p in pair):
            raise RecipeError(f"recipe: each 'compare' entry must be [point, reference] naming "
                              f"points of the recipe, got {list(pair)}")
    for point in recipe.points:
        for i, step in enumerate(point.passes):
            if "pass" not in step:
                raise RecipeError(f"recipe: points[{point.name}].passes[{i}] needs a 'pass' key")
    return recipe
