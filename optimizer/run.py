"""Run a recipe, for every model family alike: per seed, train (or load) the baseline, derive
each point by its passes (model passes, then the export, validated, then graph passes),
evaluate the graph that will ship, gate it against the seed's baseline, bundle it; then the
results tables with statistics across seeds.

Each model is exported once per seed however many points share it, and model passes are cached
by chain prefix, so "distill" and "distill, quantize" train one student, not two; a pass gets
its own copy of the model it transforms.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime
import torch

from edge_app import __version__
from edge_app.bundle import Bundle, write_bundle

from . import distributed
from .errors import RecipeError
from .families import Context, Exported, Subject, get_family
from .families.base import MODEL_FILES
from .passes import plan
from .recipe import Recipe
from .tables import write_tables
from .tracking import Tracker

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run_provenance(recipe_path: Path, data_info: dict, versions: dict, profile: str = "",
                   overrides: tuple[str, ...] = ()) -> dict:
    """What every bundle of one recipe run shares; each bundle adds its seed and timestamp.
    `profile` and `overrides`: the recipe's overlay and the --set values applied (e.g. ci,
    train.epochs=1), recorded so its figures say so."""
    return {
        "tool": "edgegen-optimizer", "tool_version": __version__, "git_commit": git_commit(),
        "recipe": {"path": str(recipe_path),
                   "sha256": hashlib.sha256(recipe_path.read_bytes()).hexdigest(),
                   **({"profile": profile} if profile else {}),
                   **({"overrides": list(overrides)} if overrides else {})},
        "dataset": data_info,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     **versions},
    }


class Ledger:
    """Rows, gate failures and bundles of one recipe run.

    Call `seed()` before each seed's baseline; `record()` then gates every point against that
    seed's baseline (the first point recorded) and writes a bundle for the first seed's points
    that pass.
    """

    def __init__(self, recipe: Recipe, tracker: Tracker, gate_failures):
        self.recipe, self.tracker, self.gate_failures = recipe, tracker, gate_failures
        self.rows: list[dict] = []
        self.bundles: list[Bundle] = []
        self.failed: list[str] = []
        self.base: dict | None = None

    def seed(self) -> None:
        self.base = None

    def record(self, seed: int, point: str, gate, metrics: dict, write) -> None:
        failures = (self.gate_failures(gate or self.recipe.gate, metrics, self.base)
                    if self.base else [])
        self.base = self.base or metrics
        self.rows.append({"seed": seed, "point": point, "metrics": metrics,
                          "gate": failures or "pass"})
        self.tracker.log_metrics(point, seed, metrics)
        self.failed += [f"{point} (seed {seed}): {f}" for f in failures]
        if not failures and seed == self.recipe.all_seeds[0] and self.recipe.bundles != "none":
            self.bundles.append(write())

    def finish(self, tables_dir: Path, method: dict) -> "RecipeResult":
        """Write the results tables, close the tracked run, and return the outcome."""
        if self.recipe.overrides:  # a changed recipe's table says so
            method = {"overrides": list(self.recipe.overrides), **method}
        if self.recipe.profile:  # a CI-sized table says so
            method = {"profile": self.recipe.profile, **method}
        summary = write_tables(tables_dir, self.rows, method, self.recipe.compare)
        self.tracker.finish(tables_dir, failed=bool(self.failed))
        return RecipeResult(self.bundles, self.failed, summary, tables_dir)


@dataclass
class RecipeResult:
    bundles: list[Bundle]
    failed: list[str]  # "<point> (seed N): reason"
    summary: dict
    tables_dir: Path


def check_points(recipe: Recipe, family) -> dict[str, list]:
    """Every point's pass chain, planned (and so checked) before hours of training."""
    return {p.name: plan(p.passes, family, f"points[{p.name}]") for p in recipe.points}


@dataclass
class Point:
    name: str
    subject: Subject
    techniques: list[dict]
    reference: Exported  # the FP32 graph of the point's model


class _Seed:
    """One seed of a recipe: its baseline, model-pass cache and exported graphs."""

    def __init__(self, ctx: Context, plans: dict, base):
        self.ctx, self.plans, self.base = ctx, plans, base
        self.models: dict[str, tuple] = {}  # chain prefix -> (Subject, technique)
        self.exports: dict[int, Exported] = {}  # id(model) -> its validated FP32 graph

    def model_passes(self, name: str, chain: tuple[dict, ...]) -> tuple[Subject, list[dict]]:
        """The point's model passes, each on its own copy of its input, cached by prefix. Under
        torchrun every rank runs these (they train with DDP), and only these."""
        subject, techniques = Subject(self.base), []
        for i, (pass_name, module, cfg) in enumerate(self.plans.get(name, [])):
            if module.STAGE != "model":
                break
            key = json.dumps(chain[:i + 1], sort_keys=True)
            if key not in self.models:
                given = dataclasses.replace(subject, model=copy.deepcopy(subject.model))
                out = module.run(given, cfg, self.ctx)
                self.models[key] = (out, _technique(pass_name, module, cfg, out.info))
            subject, technique = self.models[key]
            techniques.append(copy.deepcopy(technique))
        return subject, techniques

    def derive(self, name: str, chain: tuple[dict, ...]) -> Point:
        """Model passes, the export (once per model, validated), then graph passes with the
        family's checks of each graph they make."""
        ctx, family = self.ctx, self.ctx.family
        subject, techniques = self.model_passes(name, chain)
        model = subject.model
        if id(model) not in self.exports:
            path = ctx.scratch(f"export-{name}") / "model.onnx"
            self.exports[id(model)] = family.export(model, path, ctx)
        reference = self.exports[id(model)]
        subject, checks = Subject(model, reference.path), {}
        for pass_name, module, cfg in self.plans.get(name, [])[len(techniques):]:
            subject = module.run(subject, cfg, ctx)
            techniques.append(_technique(pass_name, module, cfg, subject.info))
            checks.update(family.check_graph(subject, reference, ctx))
        if subject.runtime == "litert":  # converted from the model, validated in LiteRT
            export = {"format": "tflite", "exporter": subject.info["converter"],
                      "validation": subject.info["validation"]}
        else:
            export = {**family.spec.describe(),
                      "opset": ctx.recipe.export.opset or family.spec.opset,
                      **reference.validation, **checks}
        return Point(name, subject, techniques + [{"name": "export", "params": export}],
                     reference)


def _technique(name: str, module, cfg, info: dict) -> dict:
    """A manifest technique: the pass's parameters (as it records them) and what it measured."""
    params = module.params(cfg) if hasattr(module, "params") else dataclasses.asdict(cfg)
    return {"name": name, "params": copy.deepcopy({**params, **info})}


def _write(ctx: Context, out: Path, point: Point, metrics: dict, sections: dict,
           train: dict, provenance: dict) -> Bundle:
    recipe, family = ctx.recipe, ctx.family
    name = recipe.name if point.name == "baseline" else f"{recipe.name}-{point.name}"
    now = datetime.now(timezone.utc)
    manifest = {
        "name": name, "task": family.task, "family": family.name,
        "precision": point.subject.precision, "techniques": [train, *point.techniques],
        **family.manifest(point.subject, metrics, sections, ctx),
        "provenance": {**provenance, "seed": ctx.seed,
                       "created_at": now.isoformat(timespec="seconds"),
                       "created_unix": int(now.timestamp())},
    }
    files = family.files(point.subject, ctx)
    if point.subject.runtime != "onnxruntime":
        manifest["model_file"] = MODEL_FILES[point.subject.runtime]
    target = out if point.name == "baseline" else out.parent / name
    return write_bundle(target, manifest, files)


def run_recipe(recipe: Recipe, recipe_path: Path, out: Path | None = None,
               runs_dir: Path = Path("runs"), progress: bool = True) -> RecipeResult:
    """Run every seed and point of `recipe`; bundles go to `out` (baseline) and its siblings."""
    started = time.perf_counter()
    family = get_family(recipe.family)
    plans = check_points(recipe, family)
    world = distributed.init_from_env()
    if world > 1 and family.task != "text-generation":
        raise RecipeError(f"torchrun: family {family.name!r} trains in one process (DDP is for "
                          f"the decoder families); run `python -m optimizer run` instead")
    main = distributed.is_main()
    data = family.prepare(recipe, runs_dir)
    provenance = run_provenance(recipe_path, data.info, family.versions(), recipe.profile,
                                recipe.overrides)
    out = out or Path("bundles") / recipe.name
    tracker = Tracker(recipe.name, dataclasses.asdict(recipe), recipe.mlflow and main)
    ledger = Ledger(recipe, tracker, family.gate)
    points = [("baseline", (), None), *((p.name, p.passes, p.gate) for p in recipe.points)]
    try:
        for seed in recipe.all_seeds:
            with tempfile.TemporaryDirectory() as tmp:
                ctx = Context(recipe, family, data, seed, progress, Path(tmp))
                base, train_info = family.baseline(ctx)
                if main:
                    family.save_checkpoint(base, runs_dir / recipe.name / f"seed{seed}" /
                                           "baseline.pt")
                train = {"name": family.train_name(recipe), "params": train_info}
                ledger.seed()
                state = _Seed(ctx, plans, base)
                for name, chain, gate in points:
                    if not main:  # other ranks only join the training calls
                        state.model_passes(name, chain)
                        continue
                    point = state.derive(name, chain)
                    metrics, sections = family.evaluate(point.subject, point.reference, ctx)
                    log.info("seed %d %s: %s", seed, name, ", ".join(
                        f"{k} {v:.4g}" for k, v in metrics.items() if k in ("fid", "perplexity")))
                    ledger.record(seed, name, gate, metrics, lambda: _write(
                        ctx, out, point, metrics, sections, train, provenance))
    except BaseException:
        tracker.finish(None, failed=True)  # close the MLflow run, then let the error speak
        raise
    method = {"seeds": list(recipe.all_seeds), **family.method(recipe, data),
              "statistics": "paired t-test over seeds, 95% CI",
              "seconds": round(time.perf_counter() - started, 1),
              "versions": provenance["versions"]}
    if not main:
        return RecipeResult([], [], {}, runs_dir / recipe.name)
    return ledger.finish(runs_dir / recipe.name, method)

