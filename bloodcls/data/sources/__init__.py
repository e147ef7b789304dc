"""Data sources chosen by ``class_path``: an image folder, a CSV manifest, BloodMNIST, or the synthetic cells.

A source only *lists* samples (file paths or in-memory arrays, with labels); decoding, hashing and caching happen
in ``bloodcls.data.loading`` so every source gets the same bad-file handling.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bloodcls.data.sources.base import DataSource, SourceListing
from bloodcls.data.sources.folder import FolderSource, list_image_folder, list_predict_folder
from bloodcls.data.sources.manifest import CsvSource, list_csv_manifest
from bloodcls.data.sources.medmnist import MedMnistSource
from bloodcls.data.sources.synthetic import SyntheticSource
from bloodcls.errors import UserInputError


def source_for_root(root: str | None) -> DataSource:
    """The source ``data.root`` alone implies: none = synthetic, a ``.csv`` = manifest, a ``.npz`` (or a folder
    with ``bloodmnist*.npz``) = BloodMNIST, any other path = image folder."""
    if root is None:
        return SyntheticSource()
    path = Path(root).expanduser()
    if path.suffix.lower() == ".csv":
        return CsvSource(root)
    if path.suffix.lower() == ".npz" or (path.is_dir() and any(path.glob("bloodmnist*.npz"))):
        return MedMnistSource(root)
    return FolderSource(root)


def as_source(source: DataSource | Mapping[str, Any] | None) -> DataSource | None:
    """A source object, also from the ``{"class_path", "init_args"}`` form a checkpoint stores it in."""
    if source is None or isinstance(source, DataSource):
        return source
    if isinstance(source, Mapping) and "class_path" in source:
        module, _, name = str(source["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**dict(source.get("init_args") or {}))  # type: ignore[no-any-return]
    raise UserInputError(f"data.source: expected a DataSource (class_path + init_args), got {source!r}")


__all__ = [
    "as_source",
    "CsvSource",
    "DataSource",
    "FolderSource",
    "MedMnistSource",
    "SourceListing",
    "SyntheticSource",
    "list_csv_manifest",
    "list_image_folder",
    "list_predict_folder",
    "source_for_root",
]
