"""Classical white-cell segmentation of a cell-centred RGB crop: Otsu thresholds, morphology, centre component.

The recipe of the pre-deep-learning blood-cell literature (e.g. Putzu et al. 2014; Rezatofighi & Soltanian-Zadeh
2011), in three steps:

1. **Stain map.** Bright-field stains absorb light, so each pixel is turned into optical density
   ``OD = -log(I / 255)`` and its distance from the background's OD (the median of the brightest pixels, the
   plasma). This is zero on the pale background and grows with the amount of stain, whatever its colour, so
   the lilac cytoplasm of a neutrophil and the orange one of an eosinophil count alike.
2. **Cell.** A three-class Otsu threshold on the stain map separates background / weakly stained
   (cytoplasm, red cells) / strongly stained (nuclei, granules). Everything above the lower threshold is
   foreground; holes are filled, small specks removed, and touching red cells are cut off with a
   distance-transform watershed. The region nearest the image centre (a CellaVision crop centres the
   leukocyte) is the cell.
3. **Nucleus.** Inside the cell, nuclear chromatin is the darkest, most purple stain: an Otsu threshold on a
   "nuclear stain" channel (blue minus green, i.e. absorbed in green but passed in blue, the haematoxylin /
   azure signature) restricted to the cell's pixels, then opening and small-object removal. Its connected
   components are the lobes.

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
    nucleus = _disc(shape, max(0.5, _FALLBACK_NUCLEUS_RADIUS * side)) & cell
    return Segmentation(cell, nucleus, True)


def optical_density(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 optical density; +1 keeps black pixels finite."""
    return -np.log((image.astype(np.float32) + 1.0) / 256.0)


def stain_map(image: np.ndarray) -> np.ndarray:
    """(H, W) float32: OD distance of each pixel from the background (plasma) colour, lightly smoothed."""
    od = optical_density(image)  # (H, W, 3)
    total = od.sum(axis=-1)
    # The plasma is the brightest thing in a smear; 30 % of the crop is background even in crowded fields.
    bright = total <= np.quantile(total, 0.3)
    background = np.median(od[bright], axis=0)  # (3,)
    dist = np.linalg.norm(od - background, axis=-1)
    sigma = max(0.5, min(image.shape[:2]) / 96.0)  # smooth sensor noise, not structure: ~1 px at 96 px
    return filters.gaussian(dist, sigma=sigma, preserve_range=True).astype(np.float32)


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
    # A red cell is ~1/4 of a typical crop across; peaks closer than that belong to the same object.
    peaks = peak_local_max(dist, min_distance=max(2, side // 8), labels=measure.label(mask), exclude_border=False)
    if len(peaks) <= 1:
        return measure.label(mask)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return segmentation.watershed(-dist, markers, mask=mask)


def _cell_mask(stain: np.ndarray) -> np.ndarray | None:
    side = min(stain.shape)
    thresholds = _otsu(stain.ravel(), classes=3)
    if thresholds is None:
        return None
    fg = stain > thresholds[0]
    fg = morphology.closing(fg, morphology.disk(_radius(side, 0.02)))
    fg = ndi.binary_fill_holes(fg)
    fg = morphology.opening(fg, morphology.disk(_radius(side, 0.03)))
    fg = remove_small(fg, max(4, int(_MIN_CELL_FRACTION * stain.size)))
    cell = _centre_region(_split_touching(fg, side))
    if cell is None:
        return None
    # The watershed cut is a straight-ish line; smooth it and close lobed outlines without regrowing into neighbours.
    cell = ndi.binary_fill_holes(morphology.closing(cell, morphology.disk(_radius(side, 0.03))))
    return cell


def _nucleus_mask(image: np.ndarray, cell: np.ndarray) -> np.ndarray:
    side = min(cell.shape)
    rgb = image.astype(np.float32)
    # Chromatin absorbs green strongly and passes blue: high for purple nuclei, low for pink/orange/blue cytoplasm
    # and for red cells. Smoothed like the stain map.
    nuclear = filters.gaussian(rgb[..., 2] - rgb[..., 1], sigma=max(0.5, side / 128.0), preserve_range=True)
    inside = nuclear[cell]
    thresholds = _otsu(inside)
    if thresholds is None:
        return np.zeros_like(cell)
    nucleus = (nuclear > thresholds[0]) & cell
    nucleus = morphology.opening(nucleus, morphology.disk(_radius(side, 0.012)))
    nucleus = ndi.binary_fill_holes(nucleus)
    return remove_small(nucleus, max(2, int(0.002 * cell.size)))


def segment_cell(image: np.ndarray) -> Segmentation:
    """Segment the centred white cell of an (H, W, 3) uint8 RGB crop into cell and nucleus masks.

    Returns boolean (H, W) masks; ``fallback`` is True when no plausible cell was found (blank or odd image) and
    the masks are a centred disc guess instead. Images that are not (H, W, 3) with H, W >= 8 also fall back.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] < 3 or min(image.shape[:2]) < 8:
        shape = image.shape[:2] if image.ndim >= 2 else (8, 8)
        return fallback_masks((max(1, shape[0]), max(1, shape[1])))
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)), 0, 255).astype(np.uint8)
    shape = image.shape[:2]
    cell = _cell_mask(stain_map(image))
    if cell is None or cell.sum() < _MIN_CELL_FRACTION * cell.size:
        return fallback_masks(shape)
    nucleus = _nucleus_mask(image, cell)
    if not nucleus.any():
        # A cell without a visible nucleus is not a leukocyte crop we understand: keep the cell, guess the nucleus.
        guess = fallback_masks(shape)
        return Segmentation(cell, guess.nucleus & cell, True)
    return Segmentation(cell, nucleus, False)
