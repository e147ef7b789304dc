"""Image folders: ``root/<class>/**/<image>`` for training, and any folder of images to classify."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bloodcls.data.images import IMAGE_EXTENSIONS, is_image_file
from bloodcls.data.sources.base import DataSource, SourceListing, require_dir, require_root
from bloodcls.errors import UserInputError
from bloodcls.io import path_text

log = logging.getLogger(__name__)


def _class_dirs(root_path: Path) -> list[Path]:
    """The class folders of ``root_path``, or a one-line error when there are none (e.g. the images were put
    directly in it): every command that reads class names from the folder says so, not "num_classes=0"."""
    class_dirs = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p for p in root_path.iterdir() if is_image_file(p)]
        hint = f" (found {len(loose)} images directly in it)" if loose else ""
        raise UserInputError(
            f"data.root: {path_text(root_path)} has no class folders{hint}; expected root/<class>/<image>, "
            "one folder per class"
        )
    return class_dirs


def list_image_folder(root: str | Path) -> SourceListing:
    """List ``root/<class>/**/<image>`` (jpg/png/bmp/tif); class names are the sorted folder names."""
    root_path = require_dir(root)
    class_dirs = _class_dirs(root_path)
    paths: list[str] = []
    labels: list[int] = []
    ignored = 0
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        images = [p for p in files if is_image_file(p)]
        ignored += len(files) - len(images)
        if not images:
            raise UserInputError(
                f"data.root: class folder {class_dir} contains no images "
                f"({'/'.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))}); add images or remove the folder"
            )
        paths.extend(str(p) for p in images)
        labels.extend([label] * len(images))
    if ignored:
        log.info("ignored %d files without an image extension under %s", ignored, root_path)
    return SourceListing(class_names=[d.name for d in class_dirs], ids=paths, labels=np.asarray(labels, dtype=np.int64))


def list_predict_folder(root: str | Path, key: str = "data.predict_root") -> SourceListing:
    """All image files under ``root`` (recursively, sorted), without labels, for ``bloodcls predict``."""
    root_path = Path(root).expanduser()
    if root_path.is_file():
        files = [root_path]
    else:
        root_path = require_dir(root_path, key=key)
        files = sorted(p for p in root_path.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserInputError(f"{key}: no images (jpg/png/bmp/tif) found under {root_path}")
    return SourceListing(class_names=[], ids=[str(p) for p in files], labels=np.full(len(files), -1, dtype=np.int64))


class FolderSource(DataSource):
    """An ImageFolder tree ``root/<class>/<image>`` (subfolders allowed); classes are the sorted folder names.

    Args:
        root: the folder holding one subfolder per class.
    """

    has_root = True

    def __init__(self, root: str | None = None) -> None:
        self.root = root

    @property
    def kind(self) -> str:
        return "folder"

    def class_names(self) -> list[str]:
        return [p.name for p in _class_dirs(require_dir(require_root(self)))]

    def listing(self, image_size: int) -> SourceListing:
        return list_image_folder(require_root(self))
