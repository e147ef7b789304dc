"""Where images come from: an ImageFolder tree, a CSV manifest, BloodMNIST, or the synthetic generator.

A source only *lists* samples (file paths or in-memory arrays, with labels); decoding, hashing and caching
happen in ``cache.py`` so every source gets the same bad-file handling.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bloodcls.data.images import IMAGE_EXTENSIONS, is_image_file
from bloodcls.errors import MissingPathError, UserInputError

log = logging.getLogger(__name__)

SourceName = Literal["auto", "folder", "csv", "bloodmnist", "synthetic"]


@dataclass
class SourceListing:
    """The samples of a source before decoding.

    Exactly one of ``paths`` (files to decode) or ``arrays`` (already decoded (N, H, W, 3) uint8) is used.
    """

    class_names: list[str]
    ids: list[str]  # file paths, or stable ids such as "synthetic/monocyte/3" for array sources
    labels: np.ndarray  # (N,) int64, -1 when unknown (predict folders)
    arrays: np.ndarray | None = None
    official_split: np.ndarray | None = None  # (N,) str, for datasets that ship one (BloodMNIST)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason) found while listing

    @property
    def is_files(self) -> bool:
        return self.arrays is None


def resolve_source(root: str | None, source: SourceName) -> SourceName:
    """Pick the source type for ``source: auto`` from what ``root`` is."""
    if source != "auto":
        return source
    if root is None:
        return "synthetic"
    path = Path(root)
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".npz" or (path.is_dir() and any(path.glob("bloodmnist*.npz"))):
        return "bloodmnist"
    return "folder"


def _require_dir(root: str | Path, key: str = "data.root") -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise MissingPathError(f"{key}: {path} does not exist")
    if not path.is_dir():
        raise UserInputError(f"{key}: {path} is not a directory (expected root/<class>/<image> folders)")
    return path


def list_image_folder(root: str | Path) -> SourceListing:
    """List ``root/<class>/**/<image>`` (jpg/png/bmp/tif); class names are the sorted folder names."""
    root_path = _require_dir(root)
    class_dirs = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p for p in root_path.iterdir() if is_image_file(p)]
        hint = f" (found {len(loose)} images directly in it)" if loose else ""
        raise UserInputError(f"data.root: {root_path} has no class folders{hint}; expected root/<class>/<image>")
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


def list_csv_manifest(csv_path: str | Path) -> SourceListing:
    """List a ``path,label`` CSV; relative paths are relative to the CSV's folder. Missing files are skipped."""
    csv_file = Path(csv_path).expanduser()
    if not csv_file.is_file():
        raise MissingPathError(f"data.root: manifest {csv_file} does not exist")
    with csv_file.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields or "label" not in fields:
            raise UserInputError(f"{csv_file}: expected a header with 'path' and 'label' columns, got {fields}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, str]] = []
    for line_no, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            skipped.append((f"{csv_file}:{line_no}", "empty path or label"))
            continue
        path = Path(row["path"]).expanduser()
        if not path.is_absolute():
            path = csv_file.parent / path
        if not path.is_file():
            skipped.append((str(path), "file not found"))
            continue
        entries.append((str(path), row["label"]))
    class_names = sorted({label for _, label in entries})
    index = {name: i for i, name in enumerate(class_names)}
    return SourceListing(
        class_names=class_names,
        ids=[p for p, _ in entries],
        labels=np.asarray([index[label] for _, label in entries], dtype=np.int64),
        skipped=skipped,
    )


def list_predict_folder(root: str | Path) -> SourceListing:
    """All image files under ``root`` (recursively, sorted), without labels, for ``bloodcls predict``."""
    root_path = Path(root).expanduser()
    if root_path.is_file():
        files = [root_path]
    else:
        root_path = _require_dir(root_path, key="data.predict_root")
        files = sorted(p for p in root_path.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserInputError(f"data.predict_root: no images (jpg/png/bmp/tif) found under {root_path}")
    return SourceListing(class_names=[], ids=[str(p) for p in files], labels=np.full(len(files), -1, dtype=np.int64))


def synthetic_listing(n_per_class: int, size: int, seed: int) -> SourceListing:
    """The embedded procedural dataset (five white-cell subtypes), generated at the training resolution."""
    from bloodcls.data.synthetic import SYNTHETIC_CLASSES, generate_dataset

    if n_per_class < 1:
        raise UserInputError(f"data.synthetic_per_class={n_per_class} must be >= 1")
    images, labels = generate_dataset(n_per_class, size=size, seed=seed)
    counters: dict[int, int] = {}
    ids = []
    for label in labels.tolist():
        counters[label] = counters.get(label, -1) + 1
        ids.append(f"synthetic/{SYNTHETIC_CLASSES[label]}/{counters[label]}")
    return SourceListing(class_names=list(SYNTHETIC_CLASSES), ids=ids, labels=labels, arrays=images)


def bloodmnist_listing(root: str | Path, size: int) -> SourceListing:
    """BloodMNIST read through the medmnist package from a local root (see ``bloodcls download bloodmnist``)."""
    from bloodcls.data.medmnist_source import load_bloodmnist

    root_path = Path(root).expanduser()
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
        official_split=np.asarray(data.official_split),
    )


def peek_class_names(root: str | None, source: SourceName) -> list[str]:
    """Class names without decoding anything (cheap: a directory listing or one CSV read)."""
    kind = resolve_source(root, source)
    if kind == "synthetic":
        from bloodcls.data.synthetic import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)
    if root is None:
        raise UserInputError(f"data.root is required for source '{kind}'")
    if kind == "folder":
        root_path = _require_dir(root)
        return sorted(p.name for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if kind == "csv":
        return list_csv_manifest(root).class_names
    from bloodcls.data.medmnist_source import bloodmnist_class_names

    return bloodmnist_class_names()
