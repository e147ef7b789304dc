"""Pure split logic: dedupe by content hash, stratified train/val/test, k-fold, labeled budgets, split.csv I/O.

Every function takes labels as integer class indices and optional per-sample ``keys`` (content hashes). Samples
are ordered by key inside each class before the seeded shuffle, so a split depends on image content, class and
seed only -- not on file names, listing order or where the dataset lives.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodcls.errors import MissingPathError, UserInputError
from bloodcls.io import write_csv

TRAIN, UNLABELED, VAL, TEST, EXCLUDED = "train", "unlabeled", "val", "test", "excluded"
SUBSETS: tuple[str, ...] = (TRAIN, UNLABELED, VAL, TEST, EXCLUDED)
SPLIT_CSV_COLUMNS: tuple[str, ...] = ("path", "hash", "label", "subset")


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (or an array's buffer): identical content, identical key."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class DedupeResult:
    """Outcome of deduplication: which indices survive and what was found."""

    keep: np.ndarray  # sorted indices kept (one per duplicate group without conflict)
    groups: list[list[int]] = field(default_factory=list)  # every group of >= 2 identical items
    conflicts: list[list[int]] = field(default_factory=list)  # groups whose items carry different labels

    @property
    def n_dropped(self) -> int:
        return sum(len(g) - 1 for g in self.groups if g not in self.conflicts) + sum(len(g) for g in self.conflicts)


def deduplicate(hashes: Sequence[str], labels: Sequence[int] | np.ndarray) -> DedupeResult:
    """Keep the first item of each group of identical content; drop every copy of a label-conflicting group.

    A picture filed under two classes has no trustworthy label, so none of its copies is used.
    """
    if len(hashes) != len(labels):
        raise UserInputError(f"hashes ({len(hashes)}) and labels ({len(labels)}) differ in length")
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    keep: list[int] = []
    groups: list[list[int]] = []
    conflicts: list[list[int]] = []
    for members in by_hash.values():
        if len(members) == 1:
            keep.append(members[0])
            continue
        groups.append(members)
        if len({int(labels[i]) for i in members}) > 1:
            conflicts.append(members)
        else:
            keep.append(members[0])
    groups.sort()
    conflicts.sort()
    return DedupeResult(keep=np.array(sorted(keep), dtype=np.int64), groups=groups, conflicts=conflicts)


# Why not scikit-learn's StratifiedShuffleSplit / StratifiedKFold: they shuffle all classes with one stream, so
# adding images to one class reshuffles every other class's split; StratifiedShuffleSplit refuses classes with a
# single image and may give a rare class no val/test image at all, where ``_count_for`` guarantees one when the
# class can spare it; and switching would change every split made so far (split.csv files, checkpoints). Here each
# class is ordered by content hash and shuffled by its own (seed, class) stream.
def _class_orders(labels: np.ndarray, keys: Sequence[str] | None, seed: int) -> dict[int, np.ndarray]:
    """Per class: its sample indices, ordered by key and then shuffled with a (seed, class)-specific RNG."""
    orders: dict[int, np.ndarray] = {}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if keys is not None:
            idx = idx[np.argsort([keys[int(i)] for i in idx], kind="stable")]
        rng = np.random.default_rng([seed, int(cls)])
        orders[int(cls)] = idx[rng.permutation(len(idx))]
    return orders


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserInputError(f"{name}={value} must be in [0, 1)")


def _count_for(n: int, fraction: float, reserve: int) -> int:
    """Images of an n-image class that go to a held-out subset: rounded, at least 1 when the fraction is
    non-zero and the class can spare it, never leaving fewer than ``reserve`` images behind."""
    if fraction <= 0:
        return 0
    count = max(1, int(round(n * fraction)))
    return max(0, min(count, n - reserve))


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Assign each sample to ``train``/``val``/``test`` with the same class proportions in every subset."""
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise UserInputError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} must be < 1 "
            "(something has to be left for training)"
        )
    labels_arr = np.asarray(labels, dtype=np.int64)
    subsets = np.full(len(labels_arr), TRAIN, dtype=object)
    for order in _class_orders(labels_arr, keys, seed).values():
        n_test = _count_for(len(order), test_fraction, reserve=1)
        n_val = _count_for(len(order), val_fraction, reserve=1 + n_test)
        subsets[order[:n_test]] = TEST
        subsets[order[n_test : n_test + n_val]] = VAL
    return subsets


def kfold_split(
    labels: Sequence[int] | np.ndarray,
    n_folds: int,
    fold: int,
    val_fraction: float = 0.15,
    seed: int = 0,
    keys: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Stratified k-fold: fold ``fold`` is the test subset; ``val_fraction`` of each class comes from the rest."""
    if n_folds < 2:
        raise UserInputError(f"n_folds={n_folds} must be >= 2")
    if not 0 <= fold < n_folds:
        raise UserInputError(f"fold={fold} must be in [0, {n_folds - 1}] for n_folds={n_folds}")
    _check_fraction("val_fraction", val_fraction)
    labels_arr = np.asarray(labels, dtype=np.int64)
    subsets = np.full(len(labels_arr), TRAIN, dtype=object)
    for cls, order in _class_orders(labels_arr, keys, seed).items():
        if len(order) < n_folds:
            name = class_names[cls] if class_names is not None else str(cls)
            raise UserInputError(
                f"class '{name}' has {len(order)} images, fewer than n_folds={n_folds}; use fewer folds or add images"
            )
        folds = np.arange(len(order)) % n_folds  # round-robin over a shuffled class = stratified folds
        test_idx = order[folds == fold]
        rest = order[folds != fold]
        n_val = _count_for(len(order), val_fraction, reserve=len(test_idx) + 1)  # at least one image trains
        subsets[test_idx] = TEST
        subsets[rest[:n_val]] = VAL
    return subsets


def labeled_budget(
    labels: Sequence[int] | np.ndarray,
    subsets: np.ndarray,
    labels_per_class: int | None = None,
    labeled_fraction: float | None = None,
    seed: int = 0,
    keys: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Keep a labeled budget of the ``train`` subset per class; the remainder becomes ``unlabeled``.

    Exactly one of ``labels_per_class`` / ``labeled_fraction`` may be given; with neither, all stay labeled.
    """
    if labels_per_class is not None and labeled_fraction is not None:
        raise UserInputError("give labels_per_class or labeled_fraction, not both")
    out = np.array(subsets, dtype=object, copy=True)
    if labels_per_class is None and labeled_fraction is None:
        return out
    if labels_per_class is not None and labels_per_class < 1:
        raise UserInputError(f"labels_per_class={labels_per_class} must be >= 1")
    if labeled_fraction is not None and not 0.0 < labeled_fraction <= 1.0:
        raise UserInputError(f"labeled_fraction={labeled_fraction} must be in (0, 1]")
    labels_arr = np.asarray(labels, dtype=np.int64)
    train_mask = out == TRAIN
    train_idx = np.flatnonzero(train_mask)
    # Shuffle with a different stream than the split so the budget is a random subset of the training split.
    orders = _class_orders(labels_arr[train_idx], [keys[int(i)] for i in train_idx] if keys else None, seed + 7919)
    for cls, order in orders.items():
        n = len(order)
        if labels_per_class is not None:
            if labels_per_class > n:
                name = class_names[cls] if class_names is not None else str(cls)
                raise UserInputError(
                    f"labels_per_class={labels_per_class} is larger than class '{name}', which has only "
                    f"{n} images in the training split"
                )
            n_labeled = labels_per_class
        else:
            n_labeled = max(1, int(round(n * float(labeled_fraction))))  # type: ignore[arg-type]
        out[train_idx[order[n_labeled:]]] = UNLABELED
    return out


def cap_subset(
    labels: Sequence[int] | np.ndarray,
    subsets: np.ndarray,
    subset: str,
    per_class: int,
    seed: int = 0,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Keep at most ``per_class`` images of each class in ``subset``; the rest become ``excluded``."""
    if per_class < 1:
        raise UserInputError(f"per-class cap {per_class} for the {subset} subset must be >= 1")
    out = np.array(subsets, dtype=object, copy=True)
    idx = np.flatnonzero(out == subset)
    labels_arr = np.asarray(labels, dtype=np.int64)
    orders = _class_orders(labels_arr[idx], [keys[int(i)] for i in idx] if keys else None, seed + 104729)
    for order in orders.values():
        out[idx[order[per_class:]]] = EXCLUDED
    return out


def subset_counts(
    labels: Sequence[int] | np.ndarray, subsets: Sequence[str] | np.ndarray, num_classes: int
) -> dict[str, list[int]]:
    """Per subset, the number of images of each class (for the split report and sanity checks)."""
    labels_arr = np.asarray(labels, dtype=np.int64)
    subsets_arr = np.asarray(subsets, dtype=object)
    return {
        name: np.bincount(labels_arr[subsets_arr == name], minlength=num_classes).tolist()
        for name in SUBSETS
        if np.any(subsets_arr == name)
    }


def write_split_csv(
    path: str | Path,
    paths: Sequence[str],
    hashes: Sequence[str],
    labels: Sequence[str],
    subsets: Sequence[str],
) -> Path:
    """Write ``path,hash,label,subset`` rows (label as a class name) so a run can be re-evaluated exactly.

    Written atomically; paths follow ``bloodcls.io.path_text`` (rows are matched back by hash, not path)."""
    return write_csv(path, SPLIT_CSV_COLUMNS, zip(paths, hashes, labels, subsets, strict=True))


@dataclass(frozen=True)
class SplitRow:
    """One line of split.csv."""

    path: str
    hash: str
    label: str
    subset: str


def read_split_csv(path: str | Path) -> list[SplitRow]:
    """Read split.csv, checking the header and the subset names."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"split file {path} does not exist")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != SPLIT_CSV_COLUMNS:
            raise UserInputError(f"{path}: expected header {','.join(SPLIT_CSV_COLUMNS)}, got {header}")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 4 or row[3] not in SUBSETS:
                raise UserInputError(f"{path}:{line_no}: expected path,hash,label,subset with subset in {SUBSETS}")
            rows.append(SplitRow(*row))
    return rows
