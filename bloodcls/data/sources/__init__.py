"""Data sources chosen by ``class_path``: an image folder, a CSV manifest, BloodMNIST, or the synthetic cells.

A source only *lists* samples (file paths or in-memory arrays, with labels); decoding, hashing and caching happen
in ``bloodcls.data.loading`` so every source gets the same bad-file handling.
"""

from __future__ import annotations

from pathlib import Path

from bloodcls.data.sources.base import DataSource, SourceListing
from bloodcls.data.sources.folder import FolderSource, list_image_folder, list_predict_folder
from bloodcls.data.sources.manifest import CsvSource, list_csv_manifest
from bloodcls.data.sources.medmnist import MedMnistSource
from bloodcls.data.sources.synthetic import SyntheticSource


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


__all__ = [
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
