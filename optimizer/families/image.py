"""What the unconditional image generators (DCGAN, Beta-VAE) share: the data split and FID
extractor, the generator's export spec and checks, quality and cost on the exported graph, the
FID/SSIM gate, the bundle's sections, checkpoints, and the exact sub-pixel graph variant and
latent calibration set their INT8 quantization uses."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_app.latent import normal_latents

from ..data.images import load_images
from ..errors import AtolError, CheckFailed, ShapeError
from ..evaluate import Extractor, GraphGenerator, fid, get_extractor, peak_ram
from ..export import IO, ExportSpec, export_module, run_checks
from ..graphs import graph_needs
from ..models.dcgan import Generator, count_parameters
from ..recipe import ExportConfig
from .base import Context, Exported, Family, Subject

GENERATOR = ExportSpec(
    inputs=(IO("z", ((0, "batch"),)),), outputs=(IO("image", ((0, "batch"),)),),
    opset=18, opset_reason="the dynamo exporter's default; ONNX Runtime 1.32 runs all of it on CPU",
    atol=1e-4,  # max |ORT - PyTorch| on the Tanh output range [-1, 1]
    checks=("outputs_within_atol",), dims=(("batch", 1, 4096),))


@dataclass
class ImageData:
    train: torch.Tensor  # (N, C, S, S) in [-1, 1]
    val: torch.Tensor  # held out: validation loss, FID reference, SSIM
    extractor: Extractor
    info: dict


def split(images: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): one fixed permutation, the same for every seed and point."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_val = max(1, int(val_fraction * len(images)))
    return images[order[n_val:]], images[order[:n_val]]


def flops_per_sample(model: torch.nn.Module, latent_dim: int) -> int:
    """FLOPs of one forward pass at batch 1 (torch.utils.flop_counter: 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, latent_dim))
    return int(counter.get_total_flops())


@dataclass
class _Probe:
    model: torch.nn.Module
    path: Path
    latent_dim: int
    atol: float
    batches: tuple[int, ...]
    seed: int


def _outputs_within_atol(p: _Probe) -> dict:
    """ORT's images equal PyTorch's within atol at every validation batch size."""
    session = ort.InferenceSession(str(p.path), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(p.seed + 1)
    worst, problems = 0.0, []
    for batch in p.batches:
        z = torch.randn(batch, p.latent_dim, generator=rng)
        with torch.no_grad():
            expected = p.model(z).numpy()
        (actual,) = session.run(["image"], {"z": z.numpy()})
        if actual.shape != expected.shape:
            raise CheckFailed(ShapeError, f"batch {batch}: ONNX Runtime output shape "
                                          f"{actual.shape} != PyTorch {expected.shape}")
        diff = float(np.max(np.abs(actual - expected)))
        worst = max(worst, diff)
        if not diff <= p.atol:  # also catches NaN
            problems.append(f"batch {batch}: max |ORT - PyTorch| = {diff:.3g}")
    if problems:
        raise CheckFailed(AtolError, f"exceeds atol {p.atol:g}: " + "; ".join(problems))
    return {"atol": p.atol, "max_abs_diff": worst}


CHECKS = {"outputs_within_atol": _outputs_within_atol}


def export_generator(gen: torch.nn.Module, path: Path, atol: float = GENERATOR.atol,
                     opset: int = GENERATOR.opset, batches: tuple[int, ...] = (1, 4),
                     seed: int = 0) -> dict:
    """Export a generator (B, latent) -> (B, C, H, W) and validate it; returns what the checks
    measured. Raises ExportError (every failure named) when ORT disagrees with PyTorch."""
    gen = gen.eval()
    example = torch.randn(2, gen.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    export_module(gen, GENERATOR, (example,), path, opset=opset)
    probe = _Probe(gen, path, gen.cfg.latent_dim, atol, batches, seed)
    return run_checks(GENERATOR.checks, CHECKS, probe, path.name)


def image_manifest_sections(gen, needs: dict) -> dict:
    """`needs`: optimizer.graphs.graph_needs of the graph file."""
    cfg = gen.cfg
    return {
        "graph": {
            "inputs": [{"name": "z", "dtype": "float32", "shape": ["batch", cfg.latent_dim]}],
            "outputs": [{"name": "image", "dtype": "float32",
                         "shape": ["batch", cfg.channels, cfg.image_size, cfg.image_size]}],
            **needs,
        },
        "generation": {
            "latent": {"dim": cfg.latent_dim, "distribution": "normal",
                       "rng": "splitmix64-box-muller-v1"},
            "image": {"channels": cfg.channels, "height": cfg.image_size,
                      "width": cfg.image_size, "value_range": [-1.0, 1.0]},
            "latent_input": "z", "image_output": "image",
        },
    }


class _LatentReader:
    """ORT CalibrationDataReader over seeded latents, in batches of 16."""

    def __init__(self, input_name: str, latents: np.ndarray):
        self.batches = iter([{input_name: latents[i:i + 16]} for i in range(0, len(latents), 16)])

    def get_next(self):
        return next(self.batches, None)


def psnr_db(reference: np.ndarray, other: np.ndarray, value_range: float = 2.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(value_range ** 2 / mse)


class ImageFamily(Family):
    task = "image-generation"
    quantize_modes = ("static-int8", "fp16")
    quantize_per_channel = True
    spec = GENERATOR

    # ---------------------------------------------------------------- data and checkpoints
    def prepare(self, recipe, runs_dir: Path) -> ImageData:
        cfg = recipe.model_config
        data = load_images(recipe.data.dataset, cfg.image_size, cfg.channels,
                           root=recipe.data.root, **recipe.data.options)
        train, val = split(data.images, recipe.data.val_fraction)
        info = {"name": data.name, "description": data.description, "samples": len(data.images),
                "train": len(train), "held_out": len(val), "sha256": data.sha256}
        extractor = get_extractor(data.images, data.sha256, runs_dir / "extractors",
                                  recipe.evaluate.inception_weights)
        return ImageData(train, val, extractor, info)

    def save_checkpoint(self, model, path: Path) -> None:
        """nanoGPT-style: the config travels with the weights; load with weights_only=True."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"family": self.name, "model_args": dataclasses.asdict(model.cfg),
                    "state_dict": model.state_dict()}, path)

    def load_checkpoint(self, path: Path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
        args = dict(ckpt["model_args"])
        if args.get("g_widths") is not None:
            args["g_widths"] = tuple(args["g_widths"])
        model = self.build(self.config(**args))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()

    def train_technique(self, ctx: Context, info: dict) -> dict:
        return {"dataset": ctx.data.info["name"], **dataclasses.asdict(ctx.recipe.train),
                "seed": ctx.seed, **info}

    def magnitude_layers(self, gen) -> tuple[list, str]:
        from ..passes.prune_magnitude import conv_layers

        return conv_layers(gen), "conv layers"

    # ---------------------------------------------------------------- graphs
    def export(self, model, path: Path, ctx: Context) -> Exported:
        gen = self.deployable(model)
        cfg = ctx.recipe.export
        return Exported(path, export_generator(gen, path, cfg.atol or self.spec.atol,
                                               cfg.opset or self.spec.opset,
                                               cfg.validation_batches, ctx.seed))

    def graph_variants(self, subject: Subject, ctx: Context) -> dict[str, Path]:
        """The ConvTranspose graph as exported, and its exact sub-pixel rewrite (Conv +
        DepthToSpace): ORT's CPU provider has integer Conv kernels but no integer ConvTranspose."""
        from ..passes import subpixel

        gen = self.deployable(subject.model)
        if isinstance(gen, subpixel.SubPixelGenerator):  # already rewritten (e.g. by QAT)
            return {"subpixel": subject.graph}
        path = ctx.scratch("subpixel") / "subpixel.onnx"
        cfg = ctx.recipe.export if ctx.recipe else ExportConfig()  # a pass outside a recipe
        export_generator(subpixel.rewrite(gen.eval()), path, cfg.atol or self.spec.atol,
                         cfg.opset or self.spec.opset, cfg.validation_batches)
        return {"convtranspose": subject.graph, "subpixel": path}

    def calibration(self, subject: Subject, cfg, ctx: Context):
        """The generator's input distribution, drawn from the bundle's own latent RNG."""
        latent_dim = self.deployable(subject.model).cfg.latent_dim
        latents = normal_latents(cfg.calibration_seed, cfg.calibration_samples, latent_dim)
        return _LatentReader("z", latents), {
            "source": "latent rng splitmix64-box-muller-v1", "seed": cfg.calibration_seed,
            "samples": len(latents), "sha256": hashlib.sha256(latents.tobytes()).hexdigest()}

    def timing_feeds(self, subject: Subject) -> dict[str, dict]:
        """The workloads a graph choice is timed on: one image, and a batch of 16."""
        latent_dim = self.deployable(subject.model).cfg.latent_dim
        return {f"batch{b}": {"z": normal_latents(1, b, latent_dim)} for b in (1, 16)}

    def compare_graphs(self, reference: Path, other: Path, subject: Subject) -> dict:
        latent_dim = self.deployable(subject.model).cfg.latent_dim
        check_z = normal_latents(12345, 16, latent_dim)
        ref = GraphGenerator(reference, latent_dim).decode(check_z).numpy()
        out = GraphGenerator(other, latent_dim).decode(check_z).numpy()
        return {"psnr_vs_fp32_db": round(psnr_db(ref, out), 2)}

    # ---------------------------------------------------------------- results
    def fid_of(self, path: Path, latent_dim: int, ctx: Context) -> float:
        """FID of the exported graph's samples against the held-out images."""
        n = ctx.recipe.evaluate.fid_samples
        fake = GraphGenerator(path, latent_dim).sample(n, seed=10_000 + ctx.seed)
        return fid(ctx.data.extractor, ctx.data.val, fake)

    def quality(self, model, path: Path, ctx: Context) -> dict:
        return {"fid": self.fid_of(path, self.deployable(model).cfg.latent_dim, ctx)}

    def evaluate(self, subject: Subject, reference: Exported, ctx: Context) -> tuple[dict, dict]:
        gen = self.deployable(subject.model).eval()
        quality = self.quality(subject.model, subject.graph, ctx)
        # params and FLOPs of the architecture; a sub-pixel (QAT) model is counted as its source
        arch = gen if isinstance(gen, Generator) else Generator(gen.cfg)
        metrics = {"params": count_parameters(arch),
                   "flops": flops_per_sample(arch, gen.cfg.latent_dim),
                   "file_size_bytes": subject.graph.stat().st_size,
                   **peak_ram(subject.graph, gen.cfg.latent_dim, ctx.recipe.evaluate.ram_batch),
                   **quality}
        return metrics, {}

    def gate(self, gate, metrics: dict, baseline: dict) -> list[str]:
        failures = []
        if gate.max_fid_increase is not None and \
                metrics["fid"] - baseline["fid"] > gate.max_fid_increase:
            failures.append(f"FID {metrics['fid']:.2f} is {metrics['fid'] - baseline['fid']:.2f} "
                            f"above the baseline's {baseline['fid']:.2f} (max increase "
                            f"{gate.max_fid_increase:g})")
        if gate.max_ssim_drop is not None and "ssim" in metrics and \
                baseline["ssim"] - metrics["ssim"] > gate.max_ssim_drop:
            failures.append(f"SSIM {metrics['ssim']:.4f} is {baseline['ssim'] - metrics['ssim']:.4f}"
                            f" below the baseline's {baseline['ssim']:.4f} (max drop "
                            f"{gate.max_ssim_drop:g})")
        return failures

    def manifest(self, subject: Subject, metrics: dict, sections: dict, ctx: Context) -> dict:
        recipe, info = ctx.recipe, ctx.data.info
        return {
            **image_manifest_sections(self.deployable(subject.model), graph_needs(subject.graph)),
            "metrics": {
                "params": metrics["params"], "flops_per_image": metrics["flops"],
                "file_size_bytes": metrics["file_size_bytes"],
                "peak_ram": {k: metrics[k] for k in ("peak_rss_bytes", "model_rss_bytes")},
                "quality": {k: metrics[k] for k in ("fid", "ssim") if k in metrics},
                "fid_extractor": ctx.data.extractor.info,
                "fid_reference": f"{info['held_out']} held-out images of {info['name']}, "
                                 f"{recipe.evaluate.fid_samples} generated",
            },
        }

    def method(self, recipe, data: ImageData) -> dict:
        return {"fid_extractor": data.extractor.info["name"],
                "fid_samples": recipe.evaluate.fid_samples, "held_out": len(data.val),
                "dataset": data.info["description"],
                "ram": "VmHWM of a fresh ONNX Runtime process running the batch (LiteRT for "
                       "LiteRT points)"}
