"""Seeded latent vectors that every EdgeGen runtime can reproduce bit for bit.

numpy's generators are not specified outside numpy, and the browser companion must draw the
same latent for the same seed. So the bundle names a small counter-based scheme, implemented
here and (in JavaScript, with BigInt) by the companion page:

``splitmix64-box-muller-v1``
    For image ``i`` of a request with seed ``s`` (0 <= s < 2**53, JavaScript's safe range):
    ``key_i = mix(s + (i + 1) * G)`` and ``x_k = mix(key_i + (k + 1) * G)`` for k = 0, 1, ...,
    all modulo 2**64, where ``G = 0x9E3779B97F4A7C15`` and ``mix`` is SplitMix64's finaliser.
    ``u = ((x >> 11) + 1) / 2**53`` lies in (0, 1]; each pair (u1, u2) gives two standard normals
    by Box-Muller: ``r = sqrt(-2 ln u1)``, ``r cos(2 pi u2)``, ``r sin(2 pi u2)``. The first
    ``dim`` values, cast to float32, are the latent. Image i does not depend on n, so image 0
    of a batch is the latent of the same seed with n = 1.
"""

from __future__ import annotations

import numpy as np

MAX_SEED = 2**53 - 1
_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output finaliser on a uint64 array (multiplication wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def normal_latents(seed: int, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 standard-normal latents for `seed`, per splitmix64-box-muller-v1."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    pairs = (dim + 1) // 2
    images = np.arange(1, n + 1, dtype=np.uint64)
    keys = _mix(np.uint64(seed) + images * _G)  # (n,)
    counters = np.arange(1, 2 * pairs + 1, dtype=np.uint64)
    x = _mix(keys[:, None] + counters[None, :] * _G)  # (n, 2*pairs)
    u = ((x >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
    u1, u2 = u[:, 0::2], u[:, 1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.empty((n, 2 * pairs), dtype=np.float64)
    z[:, 0::2] = r * np.cos(2.0 * np.pi * u2)
    z[:, 1::2] = r * np.sin(2.0 * np.pi * u2)
    return z[:, :dim].astype(np.float32)
