"""Test helpers for strategies: tiny batches shaped by a ``LoaderRequest``, and a ``TrainingData`` stand-in."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bloodcls.data.interface import LoaderRequest, PseudoLabels

K, B, SIZE = 3, 6, 32  # classes, batch size, image size


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def make_batch(request: LoaderRequest) -> dict[str, dict[str, torch.Tensor]]:
    """A tiny training batch with the views ``request`` asks for; without unlabeled views, a self-training round
    batch (pseudo-labeled pool images), which the data serves once pseudo-labels are installed."""
    labeled = {key: _images(B, i) for i, key in enumerate(request.labeled_views or {"image": None})}
    labeled |= {"label": torch.arange(B) % K, "index": torch.arange(B)}
    if request.unlabeled_views is None:
        unlabeled = {"image": _images(B, 10), "pseudo_label": torch.arange(B) % K, "weight": torch.ones(B)}
    else:
        unlabeled = {key: _images(B, 20 + i) for i, key in enumerate(request.unlabeled_views)}
    unlabeled |= {"true_label": torch.arange(B) % K, "index": torch.arange(B), "pool_index": torch.arange(B)}
    return {"labeled": labeled, "unlabeled": unlabeled}


class FakeTrainingData:
    """Implements ``bloodcls.data.interface.TrainingData`` without images; only what setup() asks is real."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        self.request: LoaderRequest | None = None
        self._pseudo: PseudoLabels | None = None

    def request_loaders(self, request: LoaderRequest) -> None:
        self.request = request

    def train_class_counts(self) -> np.ndarray:
        return self.counts

    def labeled_dataset(self, views: dict[str, Any] | None = None) -> Dataset[Any]:
        return TensorDataset()

    def unlabeled_dataset(self, views: dict[str, Any] | None = None) -> Dataset[Any]:
        return TensorDataset()

    def eval_loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        return DataLoader(dataset)

    def set_pseudo_labels(
        self,
        positions: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        labeled_ratio: float = 0.5,
    ) -> None:
        w = np.ones(len(labels), np.float32) if weights is None else weights
        self._pseudo = PseudoLabels(positions, labels, w, labeled_ratio)

    @property
    def pseudo_labels(self) -> PseudoLabels | None:
        return self._pseudo
