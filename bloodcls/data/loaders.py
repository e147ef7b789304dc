"""Loaders from datasets: the training loader a ``LoaderRequest`` asks for, self-training rounds, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from bloodcls.data.datasets import ImageArrayDataset
from bloodcls.data.interface import LoaderRequest, PseudoLabels
from bloodcls.data.pools import round_batch_sizes
from bloodcls.data.sampling import SamplerName, eval_sampler, make_sampler
from bloodcls.errors import UserInputError


@dataclass(frozen=True)
class LoaderSettings:
    """Batch sizes, workers and sampling of one process (``rank`` of ``world_size``)."""

    batch_size: int
    eval_batch_size: int
    num_workers: int
    sampler: SamplerName
    sampler_power: float
    seed: int
    num_classes: int
    steps_per_epoch: int | None = None
    unlabeled_batch_size: int | None = None
    rank: int = 0
    world_size: int = 1

    def sampler_for(self, labels: np.ndarray, batch_size: int, name: SamplerName) -> Sampler[int] | None:
        """``name``'s sampler; with ``steps_per_epoch`` it draws exactly steps x batch indices on each rank."""
        n = None if self.steps_per_epoch is None else int(self.steps_per_epoch) * batch_size
        return self._make(name, labels, n)

    def _make(self, name: SamplerName, labels: np.ndarray, n: int | None) -> Sampler[int] | None:
        return make_sampler(
            name,
            labels,
            self.num_classes,
            power=self.sampler_power,
            seed=self.seed,
            num_samples=n,
            rank=self.rank,
            world_size=self.world_size,
        )

    def loader(
        self, dataset: Dataset[Any], batch_size: int, train: bool, sampler: Sampler[int] | None = None
    ) -> DataLoader[Any]:
        n = len(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and n > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def eval_loader(self, dataset: Dataset[Any], shard: bool = True) -> DataLoader[Any]:
        """Unshuffled; under DDP (``shard``) every image on exactly one rank (see ``eval_sampler``)."""
        sampler = eval_sampler(len(dataset), self.rank, self.world_size) if shard else None  # type: ignore[arg-type]
        return self.loader(dataset, self.eval_batch_size, False, sampler)


def train_loader(
    settings: LoaderSettings,
    labeled: ImageArrayDataset,
    request: LoaderRequest,
    pool: Callable[[], ImageArrayDataset],
) -> DataLoader[Any] | CombinedLoader:
    """Labeled batches; with the request's unlabeled views, ``{"labeled", "unlabeled"}`` batches over ``pool()``."""
    batch_size = settings.batch_size
    labeled_loader = settings.loader(
        labeled, batch_size, True, settings.sampler_for(labeled.labels, batch_size, settings.sampler)
    )
    if request.unlabeled_views is None:
        return labeled_loader
    unlabeled = pool()
    if len(unlabeled) == 0:
        raise UserInputError(
            "this strategy needs unlabeled images: set data.labels_per_class / data.labeled_fraction, or "
            "data.unlabeled_root"
        )
    batch = settings.unlabeled_batch_size or max(1, int(round(batch_size * float(request.unlabeled_ratio))))
    sampler = settings.sampler_for(np.zeros(len(unlabeled), np.int64), batch, "none")
    unlabeled_loader = settings.loader(unlabeled, batch, True, sampler)
    return CombinedLoader({"labeled": labeled_loader, "unlabeled": unlabeled_loader}, mode="max_size_cycle")


def pseudo_round_loader(
    settings: LoaderSettings, labeled: ImageArrayDataset, pseudo_set: ImageArrayDataset, pseudo: PseudoLabels
) -> CombinedLoader:
    """Self-training round: each batch holds ``batch_size`` labeled images plus pseudo-labeled ones, so that
    ``labeled_ratio`` of it is labeled (``round_batch_sizes``); the pseudo-labeled images are drawn with the
    balanced sampler over pseudo-label classes (accepted labels are imbalanced)."""
    n_labeled, n_pseudo = round_batch_sizes(settings.batch_size, pseudo.labeled_ratio)
    steps = settings.steps_per_epoch or max(1, len(pseudo_set) // n_pseudo)
    pseudo_sampler = settings._make("balanced", pseudo.labels, steps * n_pseudo)
    labeled_sampler = settings.sampler_for(labeled.labels, n_labeled, settings.sampler)
    return CombinedLoader(
        {
            "labeled": settings.loader(labeled, n_labeled, True, labeled_sampler),
            "unlabeled": settings.loader(pseudo_set, n_pseudo, True, pseudo_sampler),
        },
        mode="max_size_cycle",
    )
