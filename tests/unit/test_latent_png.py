"""Seeded latents (the portable RNG spec) and the deterministic PNG encoder."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from edge_app.latent import MAX_SEED, normal_latents
from edge_app.png import encode_png, to_uint8

MASK = 2**64 - 1
G = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _reference(seed: int, i: int, dim: int) -> list[float]:
    """The spec in edge_app/latent.py's docstring, written with Python ints, one value at a time."""
    key = _mix((seed + (i + 1) * G) & MASK)
    out = []
    for k in range(0, dim + dim % 2, 2):
        u1 = ((_mix((key + (k + 1) * G) & MASK) >> 11) + 1) / 2**53
        u2 = ((_mix((key + (k + 2) * G) & MASK) >> 11) + 1) / 2**53
        r = math.sqrt(-2 * math.log(u1))
        out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return out[:dim]


@pytest.mark.parametrize("seed", [0, 1, 42, MAX_SEED])
def test_latents_follow_the_spec_exactly(seed):
    z = normal_latents(seed, 3, 7)
    for i in range(3):
        assert z[i].tolist() == np.float32(_reference(seed, i, 7)).tolist()


def test_latents_are_standard_normal_and_independent_of_n():
    z = normal_latents(123, 400, 100)
    assert z.dtype == np.float32 and z.shape == (400, 100)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert np.array_equal(normal_latents(123, 1, 100)[0], z[0])
    assert not np.array_equal(normal_latents(124, 1, 100)[0], z[0])


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="seed must be in"):
        normal_latents(seed, 1, 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trips_through_pillow_and_is_deterministic(channels):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, channels), dtype=np.uint8)
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy())
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.reshape(5, 7, channels).tolist() == pixels.tolist()


def test_to_uint8_maps_range_and_clips():
    images = np.array([-1.0, 0.0, 1.0, 2.0, -3.0], np.float32).reshape(1, 1, 1, 5)
    assert to_uint8(images, (-1.0, 1.0)).ravel().tolist() == [0, 128, 255, 255, 0]


def test_png_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        encode_png(np.zeros((2, 2, 4), np.uint8))
