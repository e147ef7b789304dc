"""Images to classify with ``bloodcls predict``: a folder (or one file) decoded at the training resolution."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from bloodcls.data.datasets import ImageArrayDataset, IndexedArrayView
from bloodcls.data.loading import DecodeSettings, FolderImages, load_folder


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
        return self._images

    def dataset(self, views: dict[str, Any]) -> ImageArrayDataset:
        """The decodable images; ``index`` is the file's position in ``paths()``."""
        ok = self.images.ok.astype(np.int64)
        return ImageArrayDataset(IndexedArrayView(self.images.images, ok), np.full(len(ok), -1), ok, views)

    def paths(self) -> list[str]:
        return list(self.images.listing.ids)

    def skipped(self) -> list[tuple[str, str]]:
        return list(self.images.skipped)
