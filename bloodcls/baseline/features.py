"""Hand-crafted cell features of the classical baseline: shape, texture (GLCM, LBP) and colour per region.

One fixed-length float vector per crop, in the order of :data:`FEATURE_NAMES`, computed from the masks of
:func:`bloodcls.baseline.segmentation.segment_cell`:

- **shape** of the cell and its nucleus (scikit-image ``regionprops``): areas as a fraction of the crop and
  perimeters in crop sides, so the numbers mean the same at every resolution; circularity ``4 pi A / P^2``
  (1 for a disc), eccentricity, solidity; nucleus-to-cell area ratio; number of nuclear lobes (connected
  components: 1 for a lymphocyte, 2 for an eosinophil, 3-5 for a neutrophil).
- **texture** of the grey cell region: Haralick GLCM contrast / homogeneity / energy / correlation (distance
  1, averaged over 0, 45, 90, 135 degrees, on 32 grey levels, pairs with a pixel outside the cell left out)
  and the 10-bin histogram of uniform rotation-invariant LBP codes (P = 8, R = 1).
- **colour**: mean and standard deviation of R, G, B, H, S, V (all in [0, 1]) in the nucleus and in the
  cytoplasm (cell minus nucleus). Hue is an angle, so its mean and spread are circular statistics (a red hue
  at 0.98 and one at 0.02 average to 0.0, not 0.5).
- ``seg_fallback``: 1 when the segmentation found no plausible cell and used its centred-disc guess.

Resolution: the features are computed at whatever size the crops are; below about 64 px the nucleus outline
and chromatin texture are a few pixels wide and the shape and texture features lose most of their meaning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi
from skimage import color, measure
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from bloodcls.baseline.segmentation import Segmentation, segment_cell, to_rgb_uint8

SHAPE_FEATURES = [
    "cell_area",
    "cell_perimeter",
    "cell_circularity",
    "cell_eccentricity",
    "cell_solidity",
    "nucleus_cell_ratio",
    "nucleus_lobes",
    "nucleus_circularity",
    "nucleus_eccentricity",
    "nucleus_solidity",
]
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
LBP_POINTS, LBP_RADIUS = 8, 1
LBP_BINS = LBP_POINTS + 2  # "uniform" codes 0..P plus one bin for all non-uniform patterns
GLCM_LEVELS = 32
_CHANNELS = ("R", "G", "B", "H", "S", "V")
_REGIONS = ("nucleus", "cytoplasm")

FEATURE_NAMES: list[str] = [
    *SHAPE_FEATURES,
    *(f"glcm_{p}" for p in GLCM_PROPS),
    *(f"lbp_{i}" for i in range(LBP_BINS)),
    *(f"{region}_{ch}_{stat}" for region in _REGIONS for ch in _CHANNELS for stat in ("mean", "std")),
    "seg_fallback",
]


def _shape(mask: np.ndarray, side: int) -> tuple[float, float, float, float, float]:
    """(area / crop area, perimeter / crop side, circularity, eccentricity, solidity) of all of ``mask``."""
    if not mask.any():
        return 0.0, 0.0, 0.0, 0.0, 0.0
    # One label for the whole mask: a lobed nucleus is described as one (non-convex) object.
    props = measure.regionprops(mask.astype(np.uint8))[0]
    area, perimeter = float(props.area), float(props.perimeter)
    # Digital perimeters of small blobs run short, so 4 pi A / P^2 can exceed 1: clip to the meaningful range.
    circularity = min(1.0, 4.0 * math.pi * area / perimeter**2) if perimeter > 0 else 1.0
    return area / mask.size, perimeter / side, circularity, float(props.eccentricity), float(props.solidity)


def _glcm(grey: np.ndarray, cell: np.ndarray) -> list[float]:
    """GLCM properties over pixel pairs inside the cell, averaged over the four directions."""
    # Level 0 marks "outside the cell"; its row and column are dropped so only cell-cell pairs count.
    levels = (grey.astype(np.int32) * GLCM_LEVELS) // 256 + 1  # 1..GLCM_LEVELS
    quantised = np.where(cell, levels, 0).astype(np.uint8)
    angles = [0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]
    glcm = graycomatrix(quantised, distances=[1], angles=angles, levels=GLCM_LEVELS + 1, symmetric=True)
    glcm = glcm[1:, 1:]  # (L, L, 1, 4)
    counted = glcm.sum(axis=(0, 1))[0] > 0  # (4,) directions with at least one pair
    if not counted.any():
        return [0.0, 1.0, 1.0, 1.0]  # a single pixel: no contrast, perfectly homogeneous
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for prop in GLCM_PROPS:
            values = graycoprops(glcm, prop)[0][counted]
            # A constant region has zero variance: correlation is undefined there, report perfect correlation.
            values = np.nan_to_num(values, nan=1.0 if prop == "correlation" else 0.0)
            out.append(float(values.mean()))
    return out


def _lbp(grey: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Normalised histogram (LBP_BINS,) of uniform LBP codes over the cell's pixels."""
    codes = local_binary_pattern(grey, LBP_POINTS, LBP_RADIUS, method="uniform")[cell]
    hist = np.bincount(codes.astype(np.int64), minlength=LBP_BINS)[:LBP_BINS].astype(np.float64)
    return hist / max(1.0, hist.sum())


def _colour_stats(rgb: np.ndarray, hsv: np.ndarray, mask: np.ndarray) -> list[float]:
    """Mean and std of R, G, B, H, S, V in ``mask`` (hue as circular statistics); zeros for an empty mask."""
    if not mask.any():
        return [0.0] * (2 * len(_CHANNELS))
    out: list[float] = []
    for ch in range(3):
        values = rgb[..., ch][mask]
        out += [float(values.mean()), float(values.std())]
    hue = 2.0 * math.pi * hsv[..., 0][mask]
    c, s = float(np.cos(hue).mean()), float(np.sin(hue).mean())
    resultant = min(1.0, math.hypot(c, s))
    mean_hue = (math.atan2(s, c) / (2.0 * math.pi)) % 1.0
    # Circular standard deviation sqrt(-2 ln R), as a fraction of the hue circle.
    hue_std = math.sqrt(-2.0 * math.log(max(resultant, 1e-12))) / (2.0 * math.pi)
    out += [mean_hue, hue_std]
    for ch in (1, 2):
        values = hsv[..., ch][mask]
        out += [float(values.mean()), float(values.std())]
    return out


def features_from_masks(image: np.ndarray, seg: Segmentation) -> np.ndarray:
    """The feature vector (len(FEATURE_NAMES),) float64 of an (H, W, 3) uint8 crop with given masks."""
    cell, nucleus = seg.cell, seg.nucleus & seg.cell
    side = min(cell.shape)
    grey = (color.rgb2gray(image) * 255.0 + 0.5).astype(np.uint8)  # (H, W) uint8, as LBP expects integers
    rgb = image.astype(np.float64) / 255.0
    hsv = color.rgb2hsv(image)

    cell_area, cell_perim, cell_circ, cell_ecc, cell_sol = _shape(cell, side)
    nuc_area, _, nuc_circ, nuc_ecc, nuc_sol = _shape(nucleus, side)
    _, lobes = ndi.label(nucleus, structure=np.ones((3, 3), dtype=bool))
    shape = [
        cell_area,
        cell_perim,
        cell_circ,
        cell_ecc,
        cell_sol,
        nuc_area / cell_area if cell_area > 0 else 0.0,
        float(lobes),
        nuc_circ,
        nuc_ecc,
        nuc_sol,
    ]
    cytoplasm = cell & ~nucleus
    vector = np.array(
        [
            *shape,
            *_glcm(grey, cell),
            *_lbp(grey, cell),
            *_colour_stats(rgb, hsv, nucleus),
            *_colour_stats(rgb, hsv, cytoplasm),
            float(seg.fallback),
        ],
        dtype=np.float64,
    )
    # Every branch above is guarded, this only keeps a surprise (a library returning nan) out of the classifier.
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)


def extract_features(image: np.ndarray) -> np.ndarray:
    """Segment an RGB crop (H, W, 3) and return its feature vector (len(FEATURE_NAMES),) float64, always finite."""
    image = to_rgb_uint8(image)
    return features_from_masks(image, segment_cell(image))


def extract_many(images: Sequence[np.ndarray] | np.ndarray, workers: int | None = None) -> np.ndarray:
    """Features of many crops, (N, len(FEATURE_NAMES)) float64, in input order, on a thread pool.

    scikit-image and SciPy release the GIL in their inner loops, so threads give a real speed-up without copying
    the images into worker processes. ``workers=None`` uses up to 8 threads (the CPU count), 1 runs inline.
    """
    n = len(images)
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or n == 1:
        return np.stack([extract_features(img) for img in images])
    with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
        return np.stack(list(pool.map(extract_features, images)))
