"""The run's split: planned from the settings (dedupe, stratified / k-fold / official, labeled budget, val cap) or
restored from a saved one (``split.csv`` or the checkpoint) by content hash, and written as ``split.csv`` +
``data_report.json``. Used by the datamodule and by ``bloodcls baseline``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bloodcls.data import splits as S
from bloodcls.data.loading import LoadedData
from bloodcls.errors import UserInputError
from bloodcls.io import write_json


@dataclass(frozen=True)
class SplitSettings:
    """What decides a fresh split (see ``BloodCellDataModule`` for each key)."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    n_folds: int | None = None
    fold: int = 0
    labels_per_class: int | None = None
    labeled_fraction: float | None = None
    val_per_class: int | None = None
    split_seed: int = 0

    def validate(self) -> None:
        """Refuse impossible settings before any data is read."""
        if self.labels_per_class is not None and self.labeled_fraction is not None:
            raise UserInputError("data.labels_per_class and data.labeled_fraction are exclusive; set one")
        if self.n_folds is None:
            S.stratified_split([0, 1], self.val_fraction, self.test_fraction)  # raises on bad fractions


def plan_split(data: LoadedData, settings: SplitSettings) -> np.ndarray:
    """Subset name per listing row (``train|unlabeled|val|test|excluded``); unusable rows are ``excluded``.

    A listing that ships an official split (BloodMNIST) keeps it unless k-fold is asked for.
    """
    rows = np.flatnonzero(data.usable)
    labels = data.listing.labels[rows]
    keys = [data.hashes[i] for i in rows]
    names = data.listing.class_names
    seed = settings.split_seed
    if data.listing.official_split is not None and settings.n_folds is None:
        sub = np.asarray(data.listing.official_split[rows], dtype=object)
    elif settings.n_folds is not None:
        sub = S.kfold_split(labels, settings.n_folds, settings.fold, settings.val_fraction, seed, keys, names)
    else:
        sub = S.stratified_split(labels, settings.val_fraction, settings.test_fraction, seed, keys)
    sub = S.labeled_budget(labels, sub, settings.labels_per_class, settings.labeled_fraction, seed, keys, names)
    if settings.val_per_class is not None:
        sub = S.cap_subset(labels, sub, S.VAL, settings.val_per_class, seed, keys)
    subsets = np.full(len(data.hashes), S.EXCLUDED, dtype=object)
    subsets[rows] = sub
    return subsets


@dataclass(frozen=True)
class SavedSplit:
    """A split made earlier, as (content hash, subset) pairs, and where it came from (for error messages)."""

    hashes: list[str]
    subsets: list[str]
    origin: str

    @classmethod
    def from_csv(cls, path: str | Path) -> SavedSplit:
        rows = S.read_split_csv(path)
        return cls([r.hash for r in rows], [r.subset for r in rows], str(path))

    @classmethod
    def from_state(cls, state: dict[str, list[str]]) -> SavedSplit:
        return cls(list(state["hash"]), list(state["subset"]), "checkpoint")


def apply_saved_split(data: LoadedData, saved: SavedSplit, root: str | None) -> np.ndarray:
    """Map a saved split onto the current listing by content hash (robust to moved or renamed files).

    Images the saved split does not know are ``excluded``; a saved test image that is missing now is an error.
    """
    by_hash = dict(zip(saved.hashes, saved.subsets, strict=True))
    out = np.full(len(data.hashes), S.EXCLUDED, dtype=object)
    usable_rows = np.flatnonzero(data.usable)
    for row in usable_rows:
        out[row] = by_hash.get(data.hashes[row], S.EXCLUDED)
    present = {data.hashes[r] for r in usable_rows}
    missing = [h for h, s in by_hash.items() if s == S.TEST and h not in present]
    if missing:
        raise UserInputError(
            f"split from {saved.origin}: {len(missing)} test images are not found under data.root "
            f"({root}); evaluate on the same data the split was made from"
        )
    return out


def split_state(data: LoadedData, subsets: np.ndarray) -> dict[str, list[str]]:
    """The split as it travels inside a checkpoint: (hash, subset) of every row not excluded."""
    rows = np.flatnonzero(subsets != S.EXCLUDED)
    return {"hash": [data.hashes[i] for i in rows], "subset": [str(subsets[i]) for i in rows]}


def data_report(
    data: LoadedData, subsets: np.ndarray, source: str, root: str | None, image_size: int
) -> dict[str, Any]:
    """What was found in the data: counts, skipped files, duplicates, split sizes per class."""
    ids = data.listing.ids
    dedupe = data.dedupe or S.DedupeResult(keep=np.zeros(0, np.int64))
    return {
        "source": source,
        "root": root,
        "image_size": image_size,
        "class_names": data.listing.class_names,
        "n_listed": len(ids),
        "n_usable": int(data.usable.sum()),
        "skipped": [{"file": f, "reason": r} for f, r in data.skipped],
        "duplicate_groups": [[ids[i] for i in g] for g in dedupe.groups],
        "label_conflicts": [[ids[i] for i in g] for g in dedupe.conflicts],
        "subset_counts": S.subset_counts(data.listing.labels, subsets, len(data.listing.class_names)),
        "cache_file": data.cache_file,
    }


def split_summary(data: LoadedData, subsets: np.ndarray) -> str:
    """One line of subset sizes, e.g. ``train 120, val 30, test 30``."""
    counts = S.subset_counts(data.listing.labels, subsets, len(data.listing.class_names))
    return ", ".join(f"{name} {sum(c)}" for name, c in counts.items() if name != S.EXCLUDED)


def write_split_files(directory: str | Path, data: LoadedData, subsets: np.ndarray, report: dict[str, Any]) -> Path:
    """Write ``split.csv`` (path, hash, class name, subset of every listed row) and ``data_report.json``."""
    names = data.listing.class_names
    path = S.write_split_csv(
        Path(directory) / "split.csv",
        data.listing.ids,
        data.hashes,
        [names[i] for i in data.listing.labels],
        [str(s) for s in subsets],
    )
    write_json(Path(directory) / "data_report.json", report)
    return path
