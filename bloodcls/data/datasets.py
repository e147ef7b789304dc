"""Torch datasets over decoded uint8 arrays: each item is a dict with named keys (see DESIGN.md)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Protocol

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from bloodcls.data.transforms import apply_transform


class ImageRows(Protocol):
    """Anything indexed like an (N, H, W, 3) uint8 array: an array, a memmap, or a lazy view of one."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> np.ndarray: ...


class ImageArrayDataset(Dataset[dict[str, torch.Tensor]]):
    """Rows ``rows`` of an (N, H, W, 3) uint8 array with labels; one output key per augmentation view.

    ``views`` maps output keys to pipelines, e.g. ``{"image": weak}`` or, for two-view strategies,
    ``{"image_weak": weak, "image_strong": strong}``. Images stay uint8 (3, H, W); ``index`` is the row in
    the source listing so pseudo-labels and predictions can be traced back to files.
    """

    def __init__(
        self,
        images: ImageRows,
        labels: np.ndarray,
        rows: np.ndarray,
        views: Mapping[str, A.Compose],
        label_key: str = "label",
        extras: Mapping[str, np.ndarray] | None = None,
        seed_salt: int | None = None,
    ) -> None:
        if len(images) != len(labels) or len(rows) != len(labels):
            raise ValueError("images, labels and rows must have the same length")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.views = dict(views)
        # Unlabeled pools expose their (benchmark-only) truth as "true_label", so no strategy can train on it
        # by accident through the "label" key.
        self.label_key = label_key
        self.extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        self._seeded_for: tuple[int, int] | None = None
        # Two datasets in one process (labeled and unlabeled loaders of a step) must not draw the same augmentation
        # for their k-th items: each gets its own stream, salted by what it holds unless the caller says otherwise.
        if seed_salt is None:
            seed_salt = zlib.crc32(self.rows.tobytes(), zlib.crc32(label_key.encode()))
        self.seed_salt = seed_salt

    def _seed_views(self) -> None:
        """Seed every pipeline from torch's seed of this process and the dataset's salt, once per (process, seed).

        An albumentations ``Compose`` draws from its own generator, seeded from OS entropy unless given a seed,
        so ``seed_everything`` alone would not make augmentations reproducible; and forked loader workers would
        otherwise share one generator state. torch gives each worker a distinct seed derived from the seeded main
        process (new each epoch unless workers persist), so it is the right source.
        """
        key = (os.getpid(), torch.initial_seed())
        if self._seeded_for == key:
            return
        for name, pipeline in self.views.items():
            # Distinct streams per view (weak vs strong) from the same process seed.
            pipeline.set_random_seed((key[1] + zlib.crc32(name.encode()) + self.seed_salt) % 2**32)
        self._seeded_for = key

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self._seed_views()
        # (H, W, 3) uint8, copied out of the (read-only, possibly memory-mapped) cache so tensors may own it.
        image = np.array(self.images[i], dtype=np.uint8, copy=True)
        item: dict[str, torch.Tensor] = {
            key: torch.from_numpy(apply_transform(pipeline, image)).permute(2, 0, 1)  # (3, H, W)
            for key, pipeline in self.views.items()
        }
        item[self.label_key] = torch.tensor(self.labels[i])
        item["index"] = torch.tensor(self.rows[i])
        for key, values in self.extras.items():
            item[key] = torch.tensor(values[i])
        return item


class IndexedArrayView:
    """Lazy row selection of a (possibly memory-mapped) array without copying it: ``view[i] = array[rows[i]]``."""

    def __init__(self, array: ImageRows, rows: np.ndarray) -> None:
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[int(self.rows[i])]


class ConcatArrays:
    """Two array-likes indexed as one (real training images followed by SMOTE-synthesized ones)."""

    def __init__(self, first: ImageRows, second: ImageRows) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self.first)
        return self.first[i] if i < n else self.second[i - n]
