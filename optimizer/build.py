"""Run a recipe: per seed, train a baseline, derive each point by its passes, export (validated),
evaluate, gate, bundle; then write the results tables with statistics across seeds."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
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
from torch.utils.flop_counter import FlopCounterMode

from edge_app import __version__
from edge_app.bundle import Bundle, write_bundle

from .data.images import load_images
from .errors import OptimizerError
from .evaluate import get_extractor, peak_ram
from .export import IMAGE_GENERATOR, export_generator
from .families import FAMILY_IMPL, Context
from .models.beta_vae import BetaVAE, BetaVAEConfig
from .models.dcgan import DCGANConfig, Generator, count_parameters
from .passes import REGISTRY, get_pass, make_config
from .passes.prune_magnitude import sparsity
from .recipe import GateConfig, Recipe
from .tables import write_tables
from .tracking import Tracker

PRECISION = {"static-int8": "int8", "fp16": "fp16"}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def flops_per_sample(model: torch.nn.Module, latent_dim: int) -> int:
    """FLOPs of one forward pass at batch 1 (torch.utils.flop_counter: 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, latent_dim))
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: torch.nn.Module, family: str, path: Path) -> None:
    """nanoGPT-style: the config travels with the weights; load with weights_only=True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"family": family, "model_args": dataclasses.asdict(model.cfg),
                "state_dict": model.state_dict()}, path)


def load_checkpoint(path: Path) -> torch.nn.Module:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
    args = dict(ckpt["model_args"])
    if args.get("g_widths") is not None:
        args["g_widths"] = tuple(args["g_widths"])
    model = (Generator(DCGANConfig(**args)) if ckpt["family"] == "dcgan"
             else BetaVAE(BetaVAEConfig(**args)))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


# --------------------------------------------------------------------------- manifest


def image_manifest(name: str, recipe: Recipe, gen: Generator, precision: str,
                   techniques: list, metrics: dict, provenance: dict) -> dict:
    cfg, spec = gen.cfg, IMAGE_GENERATOR
    return {
        "name": name, "task": "image-generation", "family": recipe.family,
        "precision": precision, "techniques": techniques,
        "graph": {
            "inputs": [{"name": spec.input_name, "dtype": "float32",
                        "shape": [spec.batch_axis, cfg.latent_dim]}],
            "outputs": [{"name": spec.output_name, "dtype": "float32",
                         "shape": [spec.batch_axis, cfg.channels, cfg.image_size, cfg.image_size]}],
            "opset": recipe.export.opset,
        },
        "generation": {
            "latent": {"dim": cfg.latent_dim, "distribution": "normal",
                       "rng": "splitmix64-box-muller-v1"},
            "image": {"channels": cfg.channels, "height": cfg.image_size,
                      "width": cfg.image_size, "value_range": [-1.0, 1.0]},
            "latent_input": spec.input_name, "image_output": spec.output_name,
        },
        "metrics": metrics,
        "provenance": provenance,
    }


def run_provenance(recipe_path: Path, data_info: dict, profile: str = "") -> dict:
    """What every bundle of one recipe run shares; each bundle adds its seed and timestamp.
    `profile`: the recipe's overlay applied (e.g. ci), recorded so its figures say so."""
    return {
        "tool": "edgegen-optimizer", "tool_version": __version__, "git_commit": git_commit(),
        "recipe": {"path": str(recipe_path),
                   "sha256": hashlib.sha256(recipe_path.read_bytes()).hexdigest(),
                   **({"profile": profile} if profile else {})},
        "dataset": data_info,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }


# --------------------------------------------------------------------------- one model


@dataclass
class Derived:
    model: torch.nn.Module  # the family's model (generator, or VAE with its decoder)
    techniques: list[dict]
    onnx: object | None = None  # passes.quantize.Result when the chain ended in an ONNX pass


def derive(base: torch.nn.Module, passes: tuple[dict, ...], ctx: Context, workdir: Path) -> Derived:
    """Apply a point's pass chain to a copy of the baseline."""
    family = FAMILY_IMPL[ctx.recipe.family]
    out = Derived(copy.deepcopy(base), [])
    for i, step in enumerate(passes):
        name = step["pass"]
        cfg = make_config(name, {k: v for k, v in step.items() if k != "pass"})
        kind = REGISTRY[name][1]
        if out.onnx is not None:
            raise OptimizerError(f"pass {name!r} follows an ONNX pass; ONNX passes come last")
        params = dataclasses.asdict(cfg)
        if kind == "torch":
            new = get_pass(name).run(family.deployable(out.model).eval(), cfg)
            out.model = family.with_deployable(out.model, new)
            if name == "prune_magnitude":
                params["sparsity"] = sparsity(new)
        elif kind == "train":
            out.model = get_pass(name).run(out.model, cfg, ctx)
        else:
            out.onnx = get_pass(name).run(family.deployable(out.model).eval(), cfg,
                                          workdir / f"pass{i}", ctx.recipe.export)
            params.update(out.onnx.report)
        out.techniques.append({"name": name, "params": params})
    return out


def measure(point: str, derived: Derived, ctx: Context, workdir: Path) -> tuple[Path, dict, dict]:
    """Export (unless quantized already) and measure: returns (onnx path, metrics, export info)."""
    family = FAMILY_IMPL[ctx.recipe.family]
    gen = family.deployable(derived.model).eval()
    if derived.onnx is not None:
        path, export = derived.onnx.path, {"validated_by": "psnr_vs_fp32_db in the quantize step"}
    else:
        path = workdir / f"{point}.onnx"
        diff = export_generator(gen, gen.cfg.latent_dim, path, ctx.recipe.export, seed=ctx.seed)
        export = {"atol": ctx.recipe.export.atol, "max_abs_diff": diff}
    quality = family.quality(derived.model, path, ctx)
    # params and FLOPs of the architecture; a sub-pixel (QAT) model is counted as its source
    arch = gen if isinstance(gen, Generator) else Generator(gen.cfg)
    metrics = {"params": count_parameters(arch), "flops": flops_per_sample(arch, gen.cfg.latent_dim),
               "file_size_bytes": path.stat().st_size,
               **peak_ram(path, gen.cfg.latent_dim, ctx.recipe.evaluate.ram_batch), **quality}
    return path, metrics, export


def gate_failures(gate: GateConfig, metrics: dict, baseline: dict) -> list[str]:
    failures = []
    if gate.max_fid_increase is not None and metrics["fid"] - baseline["fid"] > gate.max_fid_increase:
        failures.append(f"FID {metrics['fid']:.2f} is {metrics['fid'] - baseline['fid']:.2f} above "
                        f"the baseline's {baseline['fid']:.2f} (max increase "
                        f"{gate.max_fid_increase:g})")
    if gate.max_ssim_drop is not None and "ssim" in metrics and \
            baseline["ssim"] - metrics["ssim"] > gate.max_ssim_drop:
        failures.append(f"SSIM {metrics['ssim']:.4f} is {baseline['ssim'] - metrics['ssim']:.4f} "
                        f"below the baseline's {baseline['ssim']:.4f} (max drop "
                        f"{gate.max_ssim_drop:g})")
    return failures


# --------------------------------------------------------------------------- the recipe


class Ledger:
    """Rows, gate failures and bundles of one recipe run: the same bookkeeping for every family.

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

    def record(self, seed: int, point: str, gate: GateConfig | None, metrics: dict,
               write) -> None:
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


@dataclass
class _Run:
    """What every model of one recipe execution shares (data split, extractor, provenance)."""

    recipe: Recipe
    out: Path  # the baseline bundle; points go beside it
    extractor: object
    data_info: dict
    provenance: dict  # run_provenance(): computed once, not per bundle

    def bundle(self, point: str, seed: int, derived: Derived, path: Path, metrics: dict,
               export: dict, train_technique: dict) -> Bundle:
        recipe = self.recipe
        name = recipe.name if point == "baseline" else f"{recipe.name}-{point}"
        quant = [t for t in derived.techniques if t["name"] == "quantize"]
        precision = PRECISION[quant[0]["params"]["mode"]] if quant else "fp32"
        techniques = [train_technique, *derived.techniques,
                      {"name": "export", "params": {
                          "format": "onnx", "opset": recipe.export.opset,
                          "exporter": "torch.onnx.export(dynamo=True)", **export}}]
        manifest_metrics = {
            "params": metrics["params"], "flops_per_image": metrics["flops"],
            "file_size_bytes": metrics["file_size_bytes"],
            "peak_ram": {k: metrics[k] for k in ("peak_rss_bytes", "model_rss_bytes")},
            "quality": {k: metrics[k] for k in ("fid", "ssim") if k in metrics},
            "fid_extractor": self.extractor.info,
            "fid_reference": f"{self.data_info['held_out']} held-out images of "
                             f"{self.data_info['name']}, {recipe.evaluate.fid_samples} generated",
        }
        gen = FAMILY_IMPL[recipe.family].deployable(derived.model)
        now = datetime.now(timezone.utc)
        provenance = {**self.provenance, "seed": seed,
                      "created_at": now.isoformat(timespec="seconds"),
                      "created_unix": int(now.timestamp())}
        manifest = image_manifest(name, recipe, gen, precision, techniques, manifest_metrics,
                                  provenance)
        target = self.out if point == "baseline" else self.out.parent / name
        return write_bundle(target, manifest, {"model.onnx": path})


def _split(images: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): one fixed permutation, the same for every seed and point."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_val = max(1, int(val_fraction * len(images)))
    return images[order[n_val:]], images[order[:n_val]]


def run_recipe(recipe: Recipe, recipe_path: Path, out: Path | None = None,
               runs_dir: Path = Path("runs"), progress: bool = True) -> RecipeResult:
    """Run every seed and point of `recipe`; bundles go to `out` (baseline) and its siblings."""
    started = time.perf_counter()
    cfg = recipe.model_config
    data = load_images(recipe.data.dataset, cfg.image_size, cfg.channels, root=recipe.data.root,
                       **recipe.data.options)
    train_images, val_images = _split(data.images, recipe.data.val_fraction)
    data_info = {"name": data.name, "description": data.description, "samples": len(data.images),
                 "train": len(train_images), "held_out": len(val_images), "sha256": data.sha256}
    extractor = get_extractor(data.images, data.sha256, runs_dir / "extractors",
                              recipe.evaluate.inception_weights)
    run = _Run(recipe, out or Path("bundles") / recipe.name, extractor, data_info,
               run_provenance(recipe_path, data_info, recipe.profile))
    tracker = Tracker(recipe.name, dataclasses.asdict(recipe), recipe.mlflow)
    ledger = Ledger(recipe, tracker, gate_failures)
    try:
        for seed in recipe.all_seeds:
            ctx = Context(recipe, train_images, val_images, extractor, seed, progress)
            base, train_info = FAMILY_IMPL[recipe.family].train(ctx)
            save_checkpoint(base, recipe.family,
                            runs_dir / recipe.name / f"seed{seed}" / "baseline.pt")
            train_technique = {"name": "train", "params": {
                "dataset": data.name, **dataclasses.asdict(recipe.train), "seed": seed,
                **train_info}}
            ledger.seed()
            for point, chain, gate in [("baseline", (), None),
                                       *((p.name, p.passes, p.gate) for p in recipe.points)]:
                with tempfile.TemporaryDirectory() as tmp:
                    derived = derive(base, chain, ctx, Path(tmp))
                    path, metrics, export = measure(point, derived, ctx, Path(tmp))
                    ledger.record(seed, point, gate, metrics, lambda: run.bundle(
                        point, seed, derived, path, metrics, export, train_technique))
    except BaseException:
        tracker.finish(None, failed=True)  # close the MLflow run, then let the error speak
        raise
    method = {"seeds": list(recipe.all_seeds), "fid_extractor": extractor.info["name"],
              "fid_samples": recipe.evaluate.fid_samples, "held_out": len(val_images),
              "dataset": data.description, "statistics": "paired t-test over seeds, 95% CI",
              "ram": "VmHWM of a fresh ONNX Runtime process running the batch",
              "seconds": round(time.perf_counter() - started, 1),
              "versions": run.provenance["versions"]}
    return ledger.finish(runs_dir / recipe.name, method)
