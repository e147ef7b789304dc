"""The one interface every data source implements: cheap class names, and a listing of its samples."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bloodcls.errors import MissingPathError, UserInputError


@dataclass
class SourceListing:
    """The samples of a source before decoding.

    Exactly one of ``ids`` as files to decode (``arrays`` None) or ``arrays`` (already decoded (N, H, W, 3) uint8)
    is used.
    """

    class_names: list[str]
    ids: list[str]  # file paths, or stable ids such as "synthetic/monocyte/3" for array sources
    labels: np.ndarray  # (N,) int64, -1 when unknown (predict folders)
    arrays: np.ndarray | None = None
    official_split: np.ndarray | None = None  # (N,) str, for datasets that ship one (BloodMNIST)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason) found while listing


class DataSource:
    """Where labelled images come from. A new source is one subclass (and one config naming it by
    ``class_path``): implement ``class_names`` and ``listing``; a source that reads from a location takes
    ``root`` as its first argument and sets ``has_root = True`` so ``data.root`` can override it.

    Decoding, hashing, caching, deduplication and splitting are the datamodule's, so every source gets the same
    bad-file handling and content-hash splits.
    """

    has_root: bool = False
    root: str | None = None

    def class_names(self) -> list[str]:
        """Class names in label order, without decoding anything (a directory listing or one file read)."""
        raise NotImplementedError

    def listing(self, image_size: int) -> SourceListing:
        """Every sample with its label; array sources may generate or resize at ``image_size``."""
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """Short name for reports (``folder``, ``csv``, ...); the class name unless a source says otherwise."""
        return type(self).__name__

    def with_root(self, root: str) -> DataSource:
        """A copy reading from ``root`` (``data.root`` given on the datamodule)."""
        if not self.has_root:
            raise UserInputError(
                f"data.root={root}: the source {type(self).__name__} reads no files; drop data.root, or choose a "
                "source that does (data.source: bloodcls.data.FolderSource, CsvSource or MedMnistSource)"
            )
        return type(self)(**{**self.init_args(), "root": root})

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments this source was built with (its attributes of the same names)."""
        params = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in params if name != "self" and hasattr(self, name)}

    def config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: how the source is stored in checkpoint hyperparameters."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.init_args()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.init_args() == self.init_args()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


def require_root(source: DataSource) -> str:
    """The source's root, or a one-line error naming both keys that can set it."""
    if source.root is None:
        raise UserInputError(f"{type(source).__name__} needs a root: set data.root or data.source.init_args.root")
    return source.root


def require_dir(root: str | Path, key: str = "data.root") -> Path:
    """``root`` as an existing directory, or an error naming ``key``."""
    path = Path(root).expanduser()
    if not path.exists():
        raise MissingPathError(f"{key}: {path} does not exist")
    if not path.is_dir():
        raise UserInputError(f"{key}: {path} is not a directory (expected root/<class>/<image> folders)")
    return path
