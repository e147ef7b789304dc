"""Classical white-cell segmentation of a cell-centred RGB crop: Otsu thresholds, morphology, centre component.

The recipe of the pre-deep-learning blood-cell literature (e.g. Putzu et al. 2014; Rezatofighi & Soltanian-Zadeh
2011), in four steps:

1. **Stain map.** Bright-field stains absorb light, so each pixel is turned into optical density
   ``OD = -log(I / 255)``; the map is the part of it that is *not* a multiple of the background (plasma) OD.
   Uneven illumination and film thickness only scale the background colour and vanish, while any other stain,
   even the faint lilac cytoplasm of a neutrophil, stands out. Stained = above the background level plus six
   robust standard deviations (capped by the lower class boundary of a three-class Otsu threshold).
2. **Cell.** Stained pixels, closed, hole-filled, opened, specks removed; touching objects are cut apart by a
   distance-transform watershed and the region at (or nearest) the image centre is kept (a CellaVision crop
   centres the leukocyte).
3. **Nucleus.** Chromatin is dark and purple (absorbs green, passes blue): an Otsu threshold on ``B - 2G``
   over the cell's pixels, then opening, hole filling and removal of specks. Its connected components are
   the lobes.
4. **Red cells glued to the cell.** A red cell touching a lymphocyte is about as large and as round, so the
   watershed may not cut it; its colour does. Cell pixels whose stain chromaticity is closer to the other
   objects in the crop (red cells) than to the ring of cytoplasm around the nucleus are dropped, and the
   nucleus is recomputed on the cleaned cell.

Nothing here raises on odd input (a blank image, a single colour, a cell cut by the border): when no
plausible cell is found the masks fall back to a centred disc with a proportionally smaller disc as the
nucleus, and :attr:`Segmentation.fallback` says so, so features are still defined and the caller can count
how often the segmentation gave up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

# Below this share of the crop a "cell" is a speck (a platelet, noise): segmentation has failed.
_MIN_CELL_FRACTION = 0.01
# The fallback disc: a typical leukocyte in a centred crop spans about half the crop side.
_FALLBACK_CELL_RADIUS = 0.25
_FALLBACK_NUCLEUS_RADIUS = 0.14
# Minimum stain (OD units) above the background level that counts as stained: 8-bit noise is ~0.01 OD.
_MIN_STAIN = 0.02


class Segmentation(NamedTuple):
    """Boolean (H, W) masks of the whole cell and of its nucleus (nucleus ⊆ cell), and whether they are a guess."""

    cell: np.ndarray
    nucleus: np.ndarray
    fallback: bool


def _disc(shape: tuple[int, int], radius: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    return (yy - (h - 1) / 2.0) ** 2 + (xx - (w - 1) / 2.0) ** 2 <= radius**2


def fallback_masks(shape: tuple[int, int]) -> Segmentation:
    """A centred disc as the cell and a smaller one as the nucleus: the guess when segmentation fails."""
    side = min(shape)
    cell = _disc(shape, max(1.0, _FALLBACK_CELL_RADIUS * side))
    nucleus = _disc(shape, max(1.0, _FALLBACK_NUCLEUS_RADIUS * side)) & cell
    return Segmentation(cell, nucleus, True)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of an RGB(A), grey, or float-in-[0, 1] / [0, 255] image; ValueError for other shapes."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] < 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB image, got an array of shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        values = np.nan_to_num(image.astype(np.float64))
        if image.dtype.kind == "f" and values.max(initial=0.0) <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        image = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return image


def optical_density(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 optical density; +1 keeps black pixels finite."""
    return -np.log((image.astype(np.float32) + 1.0) / 256.0)


def stain_map(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) float32 stain map and the threshold separating stained pixels from the background (plasma).

    The map is the part of each pixel's optical density that is *not* a multiple of the background's OD: a
    thicker or thinner film of plasma, uneven illumination and a global stain intensity only scale the
    background colour and vanish here, while any differently coloured stain (even the faint lilac of neutrophil
    cytoplasm) stands out. The threshold is the background level plus six robust standard deviations.
    """
    od = optical_density(image)  # (H, W, 3)
    total = od.sum(axis=-1)
    # The plasma is the brightest thing in a smear; 30 % of the crop is background even in crowded fields.
    bright = total <= np.quantile(total, 0.3)
    background = np.median(od[bright], axis=0)  # (3,)
    norm = float(np.linalg.norm(background))
    diff = od - background
    if norm > 1e-6:
        unit = background / norm
        diff = diff - (diff @ unit)[..., None] * unit
    dist = np.linalg.norm(diff, axis=-1)
    sigma = max(0.5, min(image.shape[:2]) / 64.0)  # smooth sensor noise, not structure: ~1 px at 64 px
    stain = filters.gaussian(dist, sigma=sigma, preserve_range=True).astype(np.float32)
    level = float(np.median(stain[bright]))
    spread = 1.4826 * float(np.median(np.abs(stain[bright] - level)))
    return stain, level + max(6.0 * spread, _MIN_STAIN)


def _otsu(values: np.ndarray, classes: int = 2) -> np.ndarray | None:
    """Otsu threshold(s) of a 1-D sample, or None when the sample is (nearly) constant."""
    if values.size < 2 * classes or float(np.ptp(values)) < 1e-6:
        return None
    try:
        if classes == 2:
            return np.array([filters.threshold_otsu(values)])
        return np.asarray(filters.threshold_multiotsu(values, classes=classes))
    except ValueError:  # too few distinct values for the requested classes
        return None


def remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_pixels`` (version-proof: skimage renamed its arguments)."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _radius(side: int, fraction: float) -> int:
    return max(1, round(side * fraction))


def _centre_region(labels: np.ndarray) -> np.ndarray | None:
    """Mask of the labelled region containing the image centre, else the one whose pixels come nearest to it."""
    if labels.max() == 0:
        return None
    h, w = labels.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    centre_label = labels[int(round(cy)), int(round(cx))]
    if centre_label:
        return labels == centre_label
    ys, xs = np.nonzero(labels)
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return labels == labels[ys[nearest], xs[nearest]]


def _split_touching(mask: np.ndarray, side: int) -> np.ndarray:
    """Label ``mask`` with touching round objects (the leukocyte and red cells) cut apart by a watershed."""
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=max(2, side // 8), labels=measure.label(mask), exclude_border=False)
    if len(peaks) <= 1:
        return measure.label(mask)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return segmentation.watershed(-dist, markers, mask=mask)


def _foreground(stain: np.ndarray, background_level: float) -> np.ndarray | None:
    """Stained pixels (cells of all kinds), holes filled, specks removed; None for a featureless image."""
    side = min(stain.shape)
    thresholds = _otsu(stain.ravel(), classes=3)
    if thresholds is None:
        return None
    # Faint cytoplasm sits between the plasma and the lower Otsu class boundary (which separates plasma+cytoplasm
    # from red cells and nuclei in most crops): the noise-based level keeps it, Otsu caps it on noisy images.
    fg = stain > min(background_level, float(thresholds[0]))
    fg = morphology.closing(fg, morphology.disk(_radius(side, 0.02)))
    fg = ndi.binary_fill_holes(fg)
    fg = morphology.opening(fg, morphology.disk(_radius(side, 0.03)))
    return remove_small(fg, max(4, int(_MIN_CELL_FRACTION * stain.size)))


def _smooth_region(mask: np.ndarray, side: int) -> np.ndarray:
    """Close lobed outlines and straight watershed cuts, fill holes (nuclei, vacuoles are part of the cell)."""
    return ndi.binary_fill_holes(morphology.closing(mask, morphology.disk(_radius(side, 0.03))))


def _nucleus_mask(image: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Otsu on a chromatin channel over the cell's pixels; lobes much smaller than the largest are dropped."""
    side = min(cell.shape)
    rgb = image.astype(np.float32)
    # Chromatin is dark (absorbs green) and purple (passes blue): B - 2G is high for nuclei and low for pink red
    # cells, orange eosinophil granules and blue or lilac cytoplasm.
    chromatin = filters.gaussian(rgb[..., 2] - 2.0 * rgb[..., 1], sigma=max(0.5, side / 128.0), preserve_range=True)
    thresholds = _otsu(chromatin[cell])
    if thresholds is None:
        return np.zeros_like(cell)
    nucleus = (chromatin > thresholds[0]) & cell
    nucleus = morphology.opening(nucleus, morphology.disk(_radius(side, 0.012)))
    nucleus = remove_small(ndi.binary_fill_holes(nucleus), max(2, int(0.002 * cell.size)))
    labels, n = ndi.label(nucleus, structure=np.ones((3, 3), dtype=bool))
    if n > 1:  # specks (a platelet, a red-cell overlap at the rim) are far smaller than any real lobe
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        nucleus = (sizes >= 0.15 * sizes.max())[labels]
    return nucleus


def _drop_red_cells(image: np.ndarray, cell: np.ndarray, nucleus: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Remove red cells glued to the leukocyte: pixels whose stain colour is nearer the red cells' than the cell's.

    Touching red cells are about the size of a lymphocyte, so shape alone (the watershed) cannot always cut them
    off; their colour can. The red-cell colour is learnt from the other stained objects in the crop, the
    leukocyte's own from a ring of cytoplasm around its nucleus, both as OD chromaticity (intensity-free).
    """
    side = min(cell.shape)
    others = fg & ~ndi.binary_dilation(cell, iterations=2)
    ring = ndi.binary_dilation(nucleus, iterations=max(1, side // 32)) & cell & ~nucleus
    if others.sum() < 20 or ring.sum() < 5:
        return cell
    od = filters.gaussian(optical_density(image), sigma=max(0.5, side / 64.0), channel_axis=-1)
    chroma = od / np.maximum(np.linalg.norm(od, axis=-1, keepdims=True), 1e-6)  # (H, W, 3) unit vectors
    to_red = np.linalg.norm(chroma - np.median(chroma[others], axis=0), axis=-1)
    to_own = np.linalg.norm(chroma - np.median(chroma[ring], axis=0), axis=-1)
    keep = morphology.opening(cell & ((to_own <= to_red) | nucleus), morphology.disk(_radius(side, 0.03)))
    labels, _ = ndi.label(keep)
    ids = np.unique(labels[nucleus & keep])
    ids = ids[ids > 0]
    if ids.size == 0:
        return cell
    return _smooth_region(np.isin(labels, ids), side) & cell


def segment_cell(image: np.ndarray) -> Segmentation:
    """Segment the centred white cell of an (H, W, 3) uint8 RGB crop into cell and nucleus masks.

    Returns boolean (H, W) masks with nucleus ⊆ cell; ``fallback`` is True when no plausible cell (or no
    nucleus in it) was found and the masks (or the nucleus) are a centred-disc guess instead. Never raises: a
    blank, constant, tiny (< 8 px) or non-image array falls back; grey (H, W), RGBA and float images in
    [0, 1] or [0, 255] are converted first.
    """
    try:
        image = to_rgb_uint8(image)
    except ValueError:
        shape = np.shape(image)
        return fallback_masks((max(1, shape[0]), max(1, shape[1])) if len(shape) >= 2 else (8, 8))
    if min(image.shape[:2]) < 8:
        return fallback_masks(image.shape[:2])
    shape = image.shape[:2]
    side = min(shape)
    fg = _foreground(*stain_map(image))
    region = None if fg is None else _centre_region(_split_touching(fg, side))
    if fg is None or region is None:
        return fallback_masks(shape)
    cell = _smooth_region(region, side)
    nucleus = _nucleus_mask(image, cell)
    if nucleus.any():
        cell = _drop_red_cells(image, cell, nucleus, fg)
        nucleus = _nucleus_mask(image, cell)
    if cell.sum() < _MIN_CELL_FRACTION * cell.size:
        return fallback_masks(shape)
    if not nucleus.any():
        # No chromatin found: keep the cell, guess the nucleus (a centred disc clipped to the cell).
        return Segmentation(cell, fallback_masks(shape).nucleus & cell, True)
    return Segmentation(cell, nucleus, False)
