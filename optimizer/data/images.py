"""Image datasets as (N, C, S, S) float32 tensors in [-1, 1], the range of DCGAN's Tanh.

`digits` is scikit-learn's bundled handwritten digits (1797 real 8x8 scans, 17 grey levels),
upscaled bilinearly: real data that needs no download, for the quick profile and the tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError


@dataclass(frozen=True)
class ImageData:
    name: str
    images: torch.Tensor  # (N, C, S, S) float32 in [-1, 1]
    description: str

    @property
    def sha256(self) -> str:
        """Content hash of the exact tensor trained on (recorded in the bundle's provenance)."""
        return hashlib.sha256(self.images.numpy().tobytes()).hexdigest()


def load_digits(image_size: int, channels: int = 1) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    x = torch.from_numpy(raw)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif channels != 1:
        raise DatasetError(f"digits has 1 channel (or 3 by repetition), not {channels}")
    return ImageData("digits", x, f"scikit-learn digits, 8x8 upscaled to {image_size}x{image_size}")


LOADERS = {"digits": load_digits}


def load_images(dataset: str, image_size: int, channels: int) -> ImageData:
    loader = LOADERS.get(dataset)
    if loader is None:
        raise DatasetError(f"unknown image dataset {dataset!r}; known: {sorted(LOADERS)}")
    return loader(image_size, channels)
