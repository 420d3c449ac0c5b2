"""ONNX export of generators, validated against PyTorch: over tolerance means no bundle.

Each export is described as data (an ExportSpec: graph names, symbolic axes), not branches.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .errors import AtolError, ExportError, ShapeError
from .recipe import ExportConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    input_name: str
    output_name: str
    batch_axis: str = "batch"


IMAGE_GENERATOR = ExportSpec(input_name="z", output_name="image")


def export_generator(model: torch.nn.Module, latent_dim: int, path: Path, cfg: ExportConfig,
                     spec: ExportSpec = IMAGE_GENERATOR, seed: int = 0) -> float:
    """Export `model` (B, latent_dim) -> (B, C, H, W) to `path`; return the max |ORT - torch|.

    Raises ShapeError / AtolError when ONNX Runtime disagrees with PyTorch on any of the
    validation batch sizes, so the caller writes no bundle.
    """
    model = model.eval()
    example = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(seed))
    batch = torch.export.Dim(spec.batch_axis, min=1, max=4096)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not our concern
            torch.onnx.export(model, (example,), str(path), input_names=[spec.input_name],
                              output_names=[spec.output_name], opset_version=cfg.opset,
                              dynamic_shapes={"z": {0: batch}}, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    return validate_export(model, latent_dim, path, cfg, spec, seed)


def validate_export(model: torch.nn.Module, latent_dim: int, path: Path, cfg: ExportConfig,
                    spec: ExportSpec = IMAGE_GENERATOR, seed: int = 0) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(seed + 1)
    worst = 0.0
    failures = []
    for batch in cfg.validation_batches:
        z = torch.randn(batch, latent_dim, generator=rng)
        with torch.no_grad():
            expected = model(z).numpy()
        (actual,) = session.run([spec.output_name], {spec.input_name: z.numpy()})
        if actual.shape != expected.shape:
            raise ShapeError(f"{path.name}: batch {batch}: ONNX Runtime output shape "
                             f"{actual.shape} != PyTorch {expected.shape}")
        diff = float(np.max(np.abs(actual - expected)))
        worst = max(worst, diff)
        if not diff <= cfg.atol:  # also catches NaN
            failures.append(f"batch {batch}: max |ORT - PyTorch| = {diff:.3g}")
    if failures:
        raise AtolError(f"{path.name}: export exceeds atol {cfg.atol:g}: " + "; ".join(failures))
    log.info("export %s validated: max abs diff %.3g <= %g", path.name, worst, cfg.atol)
    return worst
