"""bloodcls's own albumentations transforms for other labs' images: ZoomOut / ZoomIn (cell scale) and StainNormalize
(Reinhard or Macenko through ``torchstain``, fitted on reference images from the training data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from PIL import Image

from bloodcls.data.domain_shift import zoom_in, zoom_out
from bloodcls.data.images import is_image_file
from bloodcls.errors import MissingPathError, UserInputError

MAX_REFERENCE_IMAGES = 64  # enough for stable stain statistics, cheap to fit at start-up
REFERENCE_SIDE = 64  # reference images are tiled into one mosaic at this side


class ZoomOut(A.ImageOnlyTransform):  # type: ignore[misc]
    """Shrink the image by ``factor`` onto a canvas of its border colour: brings tight external crops (the cell
    fills the frame) to the training images' cell scale (``factor`` = their cell fraction / the training one)."""

    def __init__(self, factor: float = 2.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        if factor < 1:
            raise UserInputError(f"transform ZoomOut: factor={factor} must be >= 1")
        self.factor = factor

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return zoom_out(img, self.factor)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("factor",)


class ZoomIn(A.ImageOnlyTransform):  # type: ignore[misc]
    """Centre crop of ``1/factor`` resized back: trains on tighter crops (the cell fills more of the frame), the
    train-time alternative to ``ZoomOut`` at evaluation."""

    def __init__(self, factor: float = 2.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        if factor < 1:
            raise UserInputError(f"transform ZoomIn: factor={factor} must be >= 1")
        self.factor = factor

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return zoom_in(img, self.factor)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("factor",)


def _reference_files(reference: str) -> list[Path]:
    path = Path(reference).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingPathError(f"transform StainNormalize: reference {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserInputError(f"transform StainNormalize: no images under reference {path}")
    step = max(1, len(files) // MAX_REFERENCE_IMAGES)  # evenly over the sorted tree, so over every class folder
    return files[::step][:MAX_REFERENCE_IMAGES]


def reference_mosaic(reference: str) -> np.ndarray:
    """The reference images tiled into one RGB uint8 mosaic (what torchstain fits its target on)."""
    tiles = []
    for file in _reference_files(reference):
        with Image.open(file) as im:
            rgb = np.asarray(im.convert("RGB"))
        tiles.append(cv2.resize(rgb, (REFERENCE_SIDE, REFERENCE_SIDE), interpolation=cv2.INTER_AREA))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    while len(tiles) % cols:
        tiles.append(tiles[len(tiles) % cols])  # fill the last row with repeats (statistics barely move)
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)


class StainNormalize(A.ImageOnlyTransform):  # type: ignore[misc]
    """Stain normalisation to a reference (``torchstain``'s numpy Reinhard or Macenko normaliser).

    Args:
        reference: an image, or a folder of images (e.g. the training data root; up to 64 spread over the tree
            are tiled into one mosaic), whose stain is the target.
        method: ``reinhard`` (match LAB mean and spread) or ``macenko`` (stain vectors by optical-density SVD).
    """

    def __init__(self, reference: str, method: Literal["reinhard", "macenko"] = "reinhard", p: float = 1.0) -> None:
        super().__init__(p=p)
        try:
            from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer
        except ImportError:
            raise UserInputError("transform StainNormalize needs torchstain: pip install 'bloodcls[stain]'") from None
        if method not in ("reinhard", "macenko"):
            raise UserInputError(f"transform StainNormalize: method={method!r}, expected reinhard or macenko")
        self.reference, self.method = reference, method
        self.normalizer = NumpyReinhardNormalizer() if method == "reinhard" else NumpyMacenkoNormalizer()
        self.normalizer.fit(reference_mosaic(reference))

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        try:
            out = self.normalizer.normalize(img) if self.method == "reinhard" else self.normalizer.normalize(img)[0]
        except (np.linalg.LinAlgError, ValueError, IndexError):
            return img  # Macenko finds no stain in a blank or saturated crop: leave it as it is
        return np.clip(out, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("reference", "method")


CUSTOM_TRANSFORMS: dict[str, type[A.BasicTransform]] = {
    "ZoomOut": ZoomOut,
    "ZoomIn": ZoomIn,
    "StainNormalize": StainNormalize,
}
