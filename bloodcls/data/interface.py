"""What strategies and callbacks may ask of the data, as typed Protocols: the only door between a
LightningModule (or a callback) and the datamodule, so neither touches ``trainer.datamodule`` as ``Any`` and the
data never calls the model.

A strategy says what its training batches must hold with a ``LoaderRequest`` in its ``setup("fit")`` (Lightning
runs ``datamodule.setup`` first, then the module's, then builds the loaders); relabeling strategies read the pool
and hand back pseudo-labels through ``TrainingData``. Report and prediction callbacks read ``EvaluationData``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from bloodcls.errors import UserInputError

# Augmented views of one part of a training batch: batch key -> preset name (eval|weak|strong), or None for the
# datamodule's configured ``train_transform``.
Views = dict[str, str | None]


@dataclass(frozen=True)
class LoaderRequest:
    """What a strategy's training batches must carry.

    ``unlabeled_views`` None: supervised batches only (no unlabeled loader). Otherwise batches are
    ``{"labeled": ..., "unlabeled": ...}`` with ``unlabeled_ratio`` unlabeled images per labeled one (FixMatch's mu).
    """

    labeled_views: Views | None = None
    unlabeled_views: Views | None = None
    unlabeled_ratio: float = 1.0


@dataclass
class PseudoLabels:
    """Accepted pseudo-labels for a self-training round, addressed by position in the unlabeled pool."""

    positions: np.ndarray  # (M,) int64 positions in ``unlabeled_dataset()``
    labels: np.ndarray  # (M,) int64
    weights: np.ndarray  # (M,) float32 per-sample loss weights
    labeled_ratio: float = 0.5  # labeled share of each batch; the labeled part stays batch_size, pseudo-labels add


@runtime_checkable
class TrainingData(Protocol):
    """What a strategy (or a strategy's callback) may ask of the data during ``fit``."""

    def request_loaders(self, request: LoaderRequest) -> None:
        """Set the views and unlabeled share the next training loader serves."""
        ...

    def train_class_counts(self) -> np.ndarray:
        """Images per class in the labeled training set (after SMOTE), for class-weighted losses."""
        ...

    def labeled_dataset(self, views: dict[str, Any] | None = None) -> Dataset[Any]:
        """The labeled training images (no SMOTE), eval views unless given."""
        ...

    def unlabeled_dataset(self, views: dict[str, Any] | None = None) -> Dataset[Any]:
        """The unlabeled pool; items carry ``true_label`` (-1 unknown) and ``pool_index``."""
        ...

    def eval_loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        """A deterministic (unshuffled) loader over ``dataset``, for relabeling and embedding passes."""
        ...

    def set_pseudo_labels(
        self,
        positions: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        labeled_ratio: float = 0.5,
    ) -> None:
        """Install a self-training round's accepted pseudo-labels; the next training loader uses them."""
        ...

    @property
    def pseudo_labels(self) -> PseudoLabels | None:
        """The pseudo-labels installed for the current round, if any."""
        ...


@runtime_checkable
class EvaluationData(Protocol):
    """What report, prediction and run-file callbacks may ask of the data."""

    def sample_ids(self) -> list[str]:
        """File (or stable id) of every listed row; a batch's ``index`` addresses it."""
        ...

    def data_report(self) -> dict[str, Any]:
        """Counts, skipped files, duplicates and split sizes."""
        ...

    def predict_paths(self) -> list[str]:
        """File (or id) of each ``index`` the predict loader yields."""
        ...

    def predict_skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of images the predict loader could not use."""
        ...

    def write_split(self, directory: str | Path) -> Path:
        """Write ``split.csv`` and ``data_report.json`` into ``directory``; returns the split file."""
        ...


def training_data(trainer: L.Trainer | None) -> TrainingData:
    """The trainer's datamodule as ``TrainingData``; a clear error when there is none or it lacks the interface."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if not isinstance(datamodule, TrainingData):
        raise UserInputError(
            f"this strategy needs a datamodule that implements bloodcls.data.interface.TrainingData, got "
            f"{type(datamodule).__name__}"
        )
    return datamodule


def evaluation_data(trainer: L.Trainer | None) -> EvaluationData | None:
    """The trainer's datamodule as ``EvaluationData``, or None (a plain dataloader, no datamodule)."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return datamodule if isinstance(datamodule, EvaluationData) else None
