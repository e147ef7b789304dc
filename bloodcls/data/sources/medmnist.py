"""BloodMNIST (MedMNIST v2) from a local ``bloodmnist[_SIZE].npz`` as a data source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodcls.data.sources.base import DataSource, SourceListing, require_root
from bloodcls.errors import UserInputError


class MedMnistSource(DataSource):
    """BloodMNIST read through the medmnist package from a local root (see ``bloodcls download bloodmnist``).

    Args:
        root: a folder holding ``bloodmnist[_SIZE].npz``, or the ``.npz`` itself (its name gives the size).
        size: which BloodMNIST resolution to read (28, 64, 128, 224).
        use_official_split: keep BloodMNIST's published train/val/test split (k-fold settings override it).
    """

    has_root = True

    def __init__(self, root: str | None = None, size: int = 28, use_official_split: bool = True) -> None:
        self.root = root
        self.size = size
        self.use_official_split = use_official_split

    @property
    def kind(self) -> str:
        return "bloodmnist"

    def class_names(self) -> list[str]:
        from bloodcls.data.medmnist_source import bloodmnist_class_names

        return bloodmnist_class_names()

    def listing(self, image_size: int) -> SourceListing:
        from bloodcls.data.medmnist_source import load_bloodmnist

        root_path = Path(require_root(self)).expanduser()
        size = self.size
        if root_path.suffix.lower() == ".npz":
            # Accept the .npz itself: medmnist wants its folder and infers the size from the file name.
            stem = root_path.stem
            size = int(stem.split("_")[1]) if "_" in stem else 28
            root_path = root_path.parent
        try:
            data = load_bloodmnist(root_path, size=size)
        except (FileNotFoundError, ValueError) as err:  # missing or malformed .npz: the user's to fix
            raise UserInputError(f"data.root: {err}") from None
        return SourceListing(
            class_names=list(data.class_names),
            ids=list(data.ids),
            labels=np.asarray(data.labels, dtype=np.int64),
            arrays=data.images,
            official_split=np.asarray(data.official_split) if self.use_official_split else None,
        )
