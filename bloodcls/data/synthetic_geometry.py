"""Anti-aliased drawing primitives on numpy pixel grids for the synthetic cell renderer (``synthetic_cells``)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


def u(rng: np.random.Generator, low: float, high: float) -> float:
    """One uniform draw as a Python float: numpy float64 scalars would silently promote float32 maps."""
    return float(rng.uniform(low, high))


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size) float32; cached because every image reuses them."""
    ax = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(ax, ax, indexing="ij")
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


def window(centre: float, reach: float, size: int) -> slice:
    """Pixel rows/cols within `reach` of `centre`, clipped to the image: small shapes only touch their box."""
    return slice(max(0, int(centre - reach)), max(0, min(size, int(np.ceil(centre + reach)) + 1)))


def coverage(signed_dist: np.ndarray, aa: float) -> np.ndarray:
    """Anti-aliased coverage from a signed distance that is positive inside; a one-pixel linear ramp."""
    return np.clip(signed_dist / aa + 0.5, 0.0, 1.0)


def ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float, aa: float
) -> np.ndarray:
    """Coverage of an ellipse with semi-axes (a, b) rotated by angle; distance scaled by the minor axis."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    dx, dy = x - cx, y - cy
    u = (c * dx + s * dy) * (1.0 / a)
    v = (c * dy - s * dx) * (1.0 / b)
    # Not an exact Euclidean distance, but within a pixel for the mild eccentricities used here.
    return coverage((1.0 - np.sqrt(u * u + v * v)) * min(a, b), aa)


def segment(
    x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float], width: float, aa: float
) -> np.ndarray:
    """Coverage of a capsule of half-width `width` around the segment p-q (the chromatin strands)."""
    ex, ey = q[0] - p[0], q[1] - p[1]
    dx, dy = x - p[0], y - p[1]
    t = np.clip((dx * ex + dy * ey) * (1.0 / max(ex * ex + ey * ey, 1e-6)), 0.0, 1.0)
    return coverage(width - np.hypot(dx - t * ex, dy - t * ey), aa)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with features about size/cells pixels wide, (S, S) float32."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
