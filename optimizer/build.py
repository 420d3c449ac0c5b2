"""Run a recipe end to end: data -> train -> checkpoint -> ONNX export (validated) -> bundle."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_app import __version__
from edge_app.bundle import Bundle, write_bundle

from .data.images import load_images
from .export import IMAGE_GENERATOR, export_generator
from .models.dcgan import DCGANConfig, Generator, count_parameters
from .recipe import Recipe
from .train_gan import train_dcgan


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


def save_checkpoint(gen: Generator, path: Path) -> None:
    """nanoGPT-style: the config travels with the weights; load with weights_only=True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": vars(gen.cfg), "state_dict": gen.state_dict()}, path)


def load_checkpoint(path: Path) -> Generator:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
    args = dict(ckpt["model_args"])
    if args.get("g_widths") is not None:
        args["g_widths"] = tuple(args["g_widths"])
    gen = Generator(DCGANConfig(**args))
    gen.load_state_dict(ckpt["state_dict"])
    return gen.eval()


def image_manifest(recipe: Recipe, gen: Generator, max_diff: float, extra_techniques: list,
                   metrics: dict, provenance: dict) -> dict:
    cfg = recipe.model
    spec = IMAGE_GENERATOR
    return {
        "name": recipe.name,
        "task": "image-generation",
        "family": recipe.family,
        "precision": "fp32",
        "techniques": [*extra_techniques,
                       {"name": "export", "params": {"format": "onnx", "opset": recipe.export.opset,
                                                     "exporter": "torch.onnx.export(dynamo=True)",
                                                     "atol": recipe.export.atol,
                                                     "max_abs_diff": max_diff}}],
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
            "latent_input": spec.input_name,
            "image_output": spec.output_name,
        },
        "metrics": {"params": count_parameters(gen),
                    "flops_per_image": flops_per_sample(gen, cfg.latent_dim), **metrics},
        "provenance": provenance,
    }


def build(recipe: Recipe, recipe_path: Path, out_dir: Path, runs_dir: Path,
          progress: bool = True) -> Bundle:
    started = time.perf_counter()
    data = load_images(recipe.data.dataset, recipe.model.image_size, recipe.model.channels)
    gen, history = train_dcgan(data.images, recipe.model, recipe.train, recipe.seed, progress)
    train_s = time.perf_counter() - started
    save_checkpoint(gen, runs_dir / recipe.name / "generator.pt")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        max_diff = export_generator(gen, recipe.model.latent_dim, onnx_path, recipe.export,
                                    seed=recipe.seed)
        now = datetime.now(timezone.utc)
        train_params = {"dataset": data.name, **vars(recipe.train), "seed": recipe.seed,
                        "steps": history.steps}
        manifest = image_manifest(
            recipe, gen, max_diff, [{"name": "train", "params": train_params}],
            metrics={"file_size_bytes": onnx_path.stat().st_size,
                     "train": {"seconds": round(train_s, 2), "final_d_loss": history.d_loss[-1],
                               "final_g_loss": history.g_loss[-1]}},
            provenance={
                "tool": "edgegen-optimizer", "tool_version": __version__,
                "git_commit": git_commit(), "seed": recipe.seed,
                "created_at": now.isoformat(timespec="seconds"),
                "created_unix": int(now.timestamp()),
                "recipe": {"path": str(recipe_path),
                           "sha256": hashlib.sha256(recipe_path.read_bytes()).hexdigest()},
                "dataset": {"name": data.name, "description": data.description,
                            "samples": len(data.images), "sha256": data.sha256},
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            })
        return write_bundle(out_dir, manifest, {"model.onnx": onnx_path})
