"""The unlabeled pool (unlabeled split + extra unlabeled folder) and a self-training round's pseudo-labeled set."""

from __future__ import annotations

from typing import Any

import numpy as np

from bloodcls.data.datasets import ConcatArrays, ImageArrayDataset, ImageRows, IndexedArrayView
from bloodcls.data.interface import PseudoLabels
from bloodcls.data.loading import FolderImages, LoadedData
from bloodcls.errors import UserInputError


def unlabeled_pool(
    data: LoadedData, rows: np.ndarray, extra: FolderImages | None, views: dict[str, Any]
) -> ImageArrayDataset:
    """The ``unlabeled`` rows of ``data`` followed by the decoded images of an extra unlabeled folder.

    Items carry ``true_label`` (-1 when unknown; benchmark datasets know it -- it is logged, never trained on) and
    ``pool_index``, the position self-training uses to address pseudo-labels.
    """
    images: ImageRows = IndexedArrayView(data.images, rows)
    truth = data.listing.labels[rows]
    index = rows
    if extra is not None:
        images = ConcatArrays(images, np.asarray(extra.images)[extra.ok])
        truth = np.concatenate([truth, np.full(len(extra.ok), -1, dtype=np.int64)])
        index = np.concatenate([rows, np.full(len(extra.ok), -1, dtype=np.int64)])
    positions = np.arange(len(truth), dtype=np.int64)
    return ImageArrayDataset(images, truth, index, views, label_key="true_label", extras={"pool_index": positions})


def pseudo_labeled(pool: ImageArrayDataset, pseudo: PseudoLabels, views: dict[str, Any]) -> ImageArrayDataset:
    """The accepted pool images of a self-training round, with ``pseudo_label`` and a per-image ``weight``."""
    return ImageArrayDataset(
        IndexedArrayView(pool.images, pseudo.positions),
        pool.labels[pseudo.positions],
        pool.rows[pseudo.positions],
        views,
        label_key="true_label",
        extras={"pseudo_label": pseudo.labels, "weight": pseudo.weights.astype(np.float32)},
    )


def round_batch_sizes(batch_size: int, labeled_ratio: float) -> tuple[int, int]:
    """(labeled, pseudo-labeled) images per batch of a self-training round: the labeled part stays ``batch_size``
    (as in round 0 and in every other strategy, so each round presents as many labeled images) and the
    pseudo-labeled images come on top, making ``labeled_ratio`` the labeled share of the batch (at least one)."""
    return batch_size, max(1, int(round(batch_size * (1.0 - labeled_ratio) / labeled_ratio)))


def make_pseudo_labels(
    positions: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, labeled_ratio: float
) -> PseudoLabels | None:
    """Checked pseudo-labels for the next round; None when nothing was accepted (a plain supervised epoch)."""
    if not 0.0 < labeled_ratio < 1.0:
        raise UserInputError(f"labeled_ratio={labeled_ratio} must be in (0, 1)")
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) == 0:
        return None
    weights_arr = np.ones(len(positions), np.float32) if weights is None else np.asarray(weights, np.float32)
    return PseudoLabels(positions, np.asarray(labels, np.int64), weights_arr, labeled_ratio)
