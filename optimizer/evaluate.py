"""Quality and cost of an exported image generator: FID, SSIM, params, FLOPs, size, peak RAM.

FID uses torchmetrics' FrechetInceptionDistance. Inception weights cannot be downloaded on an
air-gapped build box, so:
- with a local weights file (`evaluate.inception_weights`, the pt_inception-2015-12-05 file
  torch-fidelity uses), FID is the standard Inception-v3 pool3 (2048-d) FID;
- otherwise the features come from an extractor trained on the same data: a small CNN trained to
  predict image rotation (0/90/180/270), a self-supervised task that needs no labels, so it
  works for any image folder. Its 64-d pooled features replace Inception's.
The manifest names the extractor (and its hash). FID values are comparable only within one
extractor, never across extractors or with published Inception FIDs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from edge_app.latent import normal_latents
from edge_app.litert import LiteRTSession, is_litert_graph

from .errors import OptimizerError


class RotationFeatures(nn.Module):
    """(B, C, S, S) images in [0, 1] -> (B, 64) features; trained by rotation prediction."""

    num_features = 64

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, 4)  # which of the four rotations

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.body(x01 * 2 - 1)


def _rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image in all four rotations, with the rotation index as label."""
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4).repeat_interleave(len(x))
    return views, labels


def train_rotation_extractor(images: torch.Tensor, seed: int, epochs: int = 3,
                             batch: int = 128) -> tuple[RotationFeatures, float]:
    """Train on 90% of (N, C, S, S) images in [-1, 1]; return it and held-out accuracy."""
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    split = int(0.9 * len(images))
    train, held = images[order[:split]], images[order[split:]]
    model = RotationFeatures(images.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in range(0, len(train), batch):
            views, labels = _rotations((train[i:i + batch] + 1) / 2)
            loss = F.cross_entropy(model.head(model(views)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        views, labels = _rotations((held + 1) / 2)
        accuracy = (model.head(model(views)).argmax(1) == labels).float().mean().item()
    return model.eval(), accuracy


@dataclass
class Extractor:
    name: str  # "inception-v3-pool3" or "rotation-cnn"
    module: nn.Module | None  # None for Inception (torchmetrics builds it)
    info: dict  # recorded in the manifest


def get_extractor(images: torch.Tensor, dataset_sha: str, cache_dir: Path,
                  inception_weights: str | None = None, seed: int = 0) -> Extractor:
    if inception_weights:
        path = Path(inception_weights)
        if not path.is_file():
            raise OptimizerError(f"inception weights file {path} not found (expected the "
                                 f"torch-fidelity pt_inception-2015-12-05 .pth file)")
        return Extractor("inception-v3-pool3", None, {
            "name": "inception-v3-pool3", "weights": str(path),
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    cache = cache_dir / f"rotation-{dataset_sha[:16]}-c{images.shape[1]}s{images.shape[2]}-{seed}.pt"
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        model = RotationFeatures(images.shape[1])
        model.load_state_dict(saved["state_dict"])
        accuracy = saved["accuracy"]
    else:
        model, accuracy = train_rotation_extractor(images, seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "accuracy": accuracy}, cache)
    weights = b"".join(t.numpy().tobytes() for t in model.state_dict().values())
    return Extractor("rotation-cnn", model.eval(), {
        "name": "rotation-cnn", "trained_on_sha256": dataset_sha, "seed": seed,
        "features": RotationFeatures.num_features, "rotation_accuracy": round(accuracy, 4),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "note": "self-supervised extractor trained on the same data; not Inception FID"})


@torch.no_grad()
def fid(extractor: Extractor, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between (N, C, S, S) image sets in [-1, 1] under `extractor`'s features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if extractor.module is None:
        metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                          feature_extractor_weights_path=extractor.info["weights"])
    else:
        metric = FrechetInceptionDistance(feature=extractor.module, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), 256):
            batch = ((images[i:i + 256] + 1) / 2).clamp(0, 1)
            if extractor.module is None and batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)  # Inception wants RGB
            metric.update(batch, real=is_real)
    return float(metric.compute())


def ssim(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean SSIM of (N, C, S, S) images in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(other.clamp(-1, 1), reference,
                                                     data_range=2.0))


class GraphGenerator:
    """A bundle's graph run as the server runs it (ONNX Runtime, or LiteRT for a .tflite):
    seeded latents -> images in [-1, 1]."""

    def __init__(self, path: Path, latent_dim: int):
        if is_litert_graph(path):
            self.session = LiteRTSession(path)
        else:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.latent_dim = latent_dim

    def decode(self, z: np.ndarray) -> torch.Tensor:
        out = [self.session.run(None, {"z": z[i:i + 64]})[0] for i in range(0, len(z), 64)]
        return torch.from_numpy(np.concatenate(out))

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return self.decode(normal_latents(seed, n, self.latent_dim))


def peak_ram(path: Path, latent_dim: int, batch: int = 16) -> dict:
    """Peak RSS of a fresh process that loads the model in ONNX Runtime (LiteRT for a .tflite)
    and runs `batch`.

    `peak_rss_bytes` is the process's high-water mark (VmHWM); `model_rss_bytes` is that minus
    the resident size with numpy and onnxruntime imported: what the model and its runtime
    buffers add. (Not ru_maxrss: Linux carries it across exec, so a child started from this
    torch-laden process would report the parent's peak.)
    """
    runtime = "LiteRT" if is_litert_graph(path) else "ONNX Runtime"
    return {**rss_probe(["image", str(path), str(latent_dim), str(batch)]), "batch": batch,
            "method": f"VmHWM of a fresh {runtime} process"}


def rss_probe(args: list[str]) -> dict:
    """Run optimizer/rss_probe.py in a fresh interpreter; its JSON result."""
    result = subprocess.run([sys.executable, "-m", "optimizer.rss_probe", *args],
                            capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise OptimizerError(f"peak RAM probe failed for {args[1]}: "
                             f"{result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)
