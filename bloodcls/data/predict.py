"""Images to classify with ``bloodcls predict``: a folder (or one file) decoded at the training resolution."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from bloodcls.data.datasets import ImageArrayDataset, IndexedArrayView
from bloodcls.data.loading import DecodeSettings, FolderImages, load_folder
from bloodcls.io import path_text

# An image whose shorter side is under this share of the training size is upscaled so much that its cells no longer
# look like the training cells (blurred, and usually a tighter crop): predictions on it are not to be trusted.
SMALL_IMAGE_FRACTION = 0.5


def small_images(paths: list[str], image_size: int) -> list[tuple[str, int, int]]:
    """(path, width, height) of the images whose shorter side is under ``SMALL_IMAGE_FRACTION * image_size``; only
    the headers are read. Files PIL cannot open here were decoded by other means and are left out."""
    small = []
    for path in paths:
        with contextlib.suppress(OSError, ValueError, SyntaxError), Image.open(path) as image:
            width, height = image.size
            if min(width, height) < SMALL_IMAGE_FRACTION * image_size:
                small.append((path, width, height))
    return small


def warn_small_images(paths: list[str], image_size: int, root: str) -> None:
    """One warning (with the count and an example) when predict images are far smaller than the training size."""
    small = small_images(paths, image_size)
    if small:
        path, width, height = small[0]
        rank_zero_warn(
            path_text(
                f"{len(small)} of {len(paths)} images under {root} are far smaller than the training size "
                f"({image_size} px; e.g. {path}: {width}x{height}); they are upscaled and their predictions are "
                "unreliable"
            )
        )


class PredictFolder:
    """A folder of unlabeled images, decoded on first use (in memory: prediction inputs are not cached on disk)."""

    def __init__(self, root: str, settings: DecodeSettings) -> None:
        self.root = root
        self.settings = replace(settings, cache="memory", cache_dir=None)
        self._images: FolderImages | None = None

    @property
    def images(self) -> FolderImages:
        if self._images is None:
            self._images = load_folder(self.root, self.settings, "data.predict_root", "predictions_skipped.csv")
            ids = self._images.listing.ids
            warn_small_images([ids[i] for i in self._images.ok], self.settings.image_size, self.root)
        return self._images

    def dataset(self, views: dict[str, Any]) -> ImageArrayDataset:
        """The decodable images; ``index`` is the file's position in ``paths()``."""
        ok = self.images.ok.astype(np.int64)
        return ImageArrayDataset(IndexedArrayView(self.images.images, ok), np.full(len(ok), -1), ok, views)

    def paths(self) -> list[str]:
        return list(self.images.listing.ids)

    def skipped(self) -> list[tuple[str, str]]:
        return list(self.images.skipped)
