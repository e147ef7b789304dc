"""Pure image functions that imitate another lab's imaging (recolour, zoom in, blur) and undo its scale (zoom out),
and ``write_variant``, which writes such a differently imaged copy of a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.color import hed2rgb, rgb2hed


def _check(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")


def zoom_in(image: np.ndarray, factor: float) -> np.ndarray:
    """The centre ``1/factor`` of the image resized back to its size: a tighter crop, so the cell fills more of the
    frame (``factor`` 2: a cell that filled a third of the side fills two thirds)."""
    _check(image)
    if factor < 1:
        raise ValueError(f"zoom_in factor {factor} must be >= 1")
    h, w = image.shape[:2]
    ch, cw = max(1, round(h / factor)), max(1, round(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = image[top : top + ch, left : left + cw]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixel ring: the background a zoomed-out image is padded with."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(ring, axis=0).astype(np.uint8)


def zoom_out(image: np.ndarray, factor: float) -> np.ndarray:
    """The image shrunk by ``factor`` and centred on a canvas of its own size filled with its border colour: the
    inverse of ``zoom_in`` up to resolution, bringing a tight crop back to a wider field of view."""
    _check(image)
    if factor < 1:
        raise ValueError(f"zoom_out factor {factor} must be >= 1")
    h, w = image.shape[:2]
    sh, sw = max(1, round(h / factor)), max(1, round(w / factor))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    canvas = np.empty_like(image)
    canvas[:] = border_colour(image)
    top, left = (h - sh) // 2, (w - sw) // 2
    canvas[top : top + sh, left : left + sw] = small
    return canvas


def recolour(
    image: np.ndarray, h_scale: float = 1.0, e_scale: float = 1.0, d_shift: float = 0.0, hue_shift: float = 0.0
) -> np.ndarray:
    """Another stain: scale the haematoxylin / eosin optical densities (HED colour deconvolution), shift the DAB
    channel, then rotate the hue by ``hue_shift`` degrees."""
    _check(image)
    hed = rgb2hed(image)
    hed[..., 0] *= h_scale
    hed[..., 1] *= e_scale
    hed[..., 2] += d_shift
    rgb = np.clip(hed2rgb(hed) * 255.0, 0, 255).astype(np.uint8)
    if hue_shift:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # OpenCV hue is 0..179 (2 degrees per unit)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(hue_shift / 2)) % 180).astype(np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return rgb


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` in pixels (an out-of-focus or lower-NA microscope)."""
    _check(image)
    return image.copy() if sigma <= 0 else cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


@dataclass(frozen=True)
class DomainShift:
    """One imaging condition: zoom first (a lab's crop), then stain, then focus."""

    zoom: float = 2.0  # the cell fills twice the fraction of the side it fills in the source data
    h_scale: float = 1.4
    e_scale: float = 0.6
    d_shift: float = 0.0
    hue_shift: float = 12.0
    blur_sigma: float = 1.2

    def apply(self, image: np.ndarray) -> np.ndarray:
        out = zoom_in(image, self.zoom) if self.zoom != 1 else image
        out = recolour(out, self.h_scale, self.e_scale, self.d_shift, self.hue_shift)
        return blur(out, self.blur_sigma)


def write_variant(
    images: list[tuple[str, str]], out_dir: str | Path, shift: DomainShift, size: int | None = None
) -> dict[str, str]:
    """Write a shifted copy of ``(image file, class name)`` pairs to ``out_dir/<CLASS NAME UPPER-CASE>/`` as PNGs
    (``size``: resized first, square) and return the class map ``{UPPER: name}`` that evaluates it."""
    out = Path(out_dir)
    class_map: dict[str, str] = {}
    for i, (file, name) in enumerate(images):
        folder = name.upper()
        class_map[folder] = name
        with Image.open(file) as im:
            rgb = np.asarray(im.convert("RGB"))
        if size is not None:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        (out / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(shift.apply(rgb)).save(out / folder / f"{i:06d}_{Path(file).stem}.png")
    return class_map
