"""Class imbalance tools: class weights for the loss, weighted and balanced ("equilibrium") samplers, SMOTE."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from bloodcls.errors import UserInputError

SamplerName = Literal["none", "weighted", "balanced"]
ClassWeighting = Literal["none", "inverse", "sqrt_inverse", "effective"]


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class, length ``num_classes`` (absent classes count 0)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def class_weights(
    counts: Sequence[int] | np.ndarray, scheme: ClassWeighting = "inverse", beta: float = 0.999
) -> np.ndarray:
    """Per-class loss weights, normalised so that the weighted mean over training images is 1.

    ``inverse``: 1/n_c; ``sqrt_inverse``: 1/sqrt(n_c); ``effective``: (1-beta)/(1-beta^n_c) (Cui et al. 2019).
    Classes without images get weight 0 (they never appear as targets anyway).
    """
    counts_arr = np.asarray(counts, dtype=np.float64)
    present = counts_arr > 0
    weights = np.zeros_like(counts_arr)
    if scheme == "none":
        weights[present] = 1.0
    elif scheme == "inverse":
        weights[present] = 1.0 / counts_arr[present]
    elif scheme == "sqrt_inverse":
        weights[present] = 1.0 / np.sqrt(counts_arr[present])
    elif scheme == "effective":
        weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts_arr[present]))
    else:
        raise UserInputError(f"unknown class weighting '{scheme}', expected none|inverse|sqrt_inverse|effective")
    # Normalise so the loss scale (and hence a tuned learning rate) does not change with the scheme.
    mean_weight = float((weights * counts_arr).sum() / counts_arr.sum())
    return weights / mean_weight


def sample_weights(labels: Sequence[int] | np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """Per-image sampling weight n_class^-power: power 1 draws every class equally often in expectation."""
    labels_arr = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels_arr, num_classes).astype(np.float64)
    return np.power(counts[labels_arr], -power)


def weighted_sampler(
    labels: Sequence[int] | np.ndarray, num_classes: int, power: float = 1.0, seed: int = 0
) -> WeightedRandomSampler:
    """Draw with replacement, P(image) proportional to n_class^-power; one epoch = len(labels) draws."""
    weights = torch.as_tensor(sample_weights(labels, num_classes, power), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)


class BalancedClassSampler(Sampler[int]):
    """Equilibrium sampler: cycles through the classes in shuffled rounds, so every window of K consecutive
    indices holds one image of each of the K classes and each batch is (near-)exactly class balanced.

    Within a class, images are drawn without replacement from a reshuffled cycle, so minority images repeat
    only after all of them were seen. Call ``set_epoch`` (Lightning does) for a new order each epoch.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, num_samples: int | None = None, seed: int = 0) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) == 0:
            raise UserInputError("BalancedClassSampler needs at least one labeled image")
        self.classes = np.unique(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.num_samples = len(self.labels) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = [rng.permutation(members) for members in self.by_class]
        cursors = [0] * len(pools)
        produced = 0
        while produced < self.num_samples:
            for k in rng.permutation(len(pools)):
                if produced >= self.num_samples:
                    break
                if cursors[k] == len(pools[k]):
                    pools[k] = rng.permutation(self.by_class[k])
                    cursors[k] = 0
                yield int(pools[k][cursors[k]])
                cursors[k] += 1
                produced += 1


def smote_oversample(
    images: np.ndarray, labels: np.ndarray, seed: int = 0, k_neighbors: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize minority-class images with SMOTE (Chawla et al. 2002) until every class matches the largest.

    Works on the flattened uint8 pixels at the training resolution. Returns only the *new* images and labels
    (N_new, H, W, C) / (N_new,), so callers keep real and synthetic images apart (never in val/test).
    """
    from imblearn.over_sampling import SMOTE

    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() == present.max():
        return images[:0].copy(), labels[:0].copy()
    if present.min() < 2:
        raise UserInputError("SMOTE needs at least 2 training images in every class")
    k = int(min(k_neighbors, present.min() - 1))
    flat = images.reshape(len(images), -1).astype(np.float32)
    sampler = SMOTE(k_neighbors=k, random_state=seed)
    resampled, new_labels = sampler.fit_resample(flat, labels)
    # imblearn appends synthetic rows after the originals.
    synthetic = resampled[len(images) :]
    synthetic = np.clip(np.rint(synthetic), 0, 255).astype(np.uint8).reshape((-1, *images.shape[1:]))
    return synthetic, np.asarray(new_labels[len(images) :], dtype=np.int64)
