"""Class imbalance tools: class weights for the loss, weighted and balanced ("equilibrium") samplers, SMOTE.

The training samplers know about distributed training: under DDP every rank builds the same sampler with its
``rank`` and ``world_size``, all ranks make one identical seeded draw per epoch (seeded by ``seed`` and the epoch
Lightning passes to ``set_epoch``) and each rank takes its own disjoint, equal-length share of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler, Sampler

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


def per_rank_samples(total: int, world_size: int) -> int:
    """Draws per rank when an epoch is ``total`` draws in all (DistributedSampler's rounding: up)."""
    return max(1, math.ceil(total / world_size))


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")


class ShardedSampler(DistributedSampler):
    """Base of samplers that shard one seeded draw per epoch across ranks themselves.

    Subclassing ``DistributedSampler`` tells Lightning the sampler is already distributed, so it does not wrap it
    in a ``DistributedSamplerWrapper`` (which would shard the shard). ``DistributedSampler.__init__`` is not
    called: it wants a dataset and computes its own lengths; the attributes it would set are set here.
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        if num_samples < 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0")
        self.num_samples = int(num_samples)  # per rank
        self.seed = int(seed)
        self.rank = int(rank)
        self.num_replicas = int(world_size)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self.shuffle = True
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self) -> np.random.Generator:
        # The same stream on every rank: only the seed and the epoch decide the draw, never the rank.
        return np.random.default_rng([self.seed, self.epoch])


class DrawWithReplacement(ShardedSampler):
    """``num_samples`` draws with replacement per rank, P(image) ~ ``weights`` (uniform when ``None``).

    All ranks draw the same ``world_size * num_samples`` indices and rank r keeps positions r, r + W, ... of it.
    """

    def __init__(
        self,
        n: int,
        num_samples: int,
        weights: np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(num_samples, seed, rank, world_size)
        if n < 1:
            raise UserInputError("a sampler needs at least one image to draw from")
        self.n = int(n)
        if weights is None:
            self.p: np.ndarray | None = None
        else:
            w = np.asarray(weights, dtype=np.float64)
            if len(w) != n or (w < 0).any() or w.sum() <= 0:
                raise ValueError("weights must be n non-negative numbers with a positive sum")
            self.p = w / w.sum()

    def __iter__(self) -> Iterator[int]:
        rng = self._rng()
        draw = rng.choice(self.n, size=self.total_size, replace=True, p=self.p)  # (W * num_samples,)
        return iter(draw[self.rank :: self.num_replicas].tolist())


def weighted_sampler(
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    power: float = 1.0,
    seed: int = 0,
    num_samples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DrawWithReplacement:
    """Draw with replacement, P(image) proportional to n_class^-power; by default an epoch is ``len(labels)``
    draws in all (split across ranks), or ``num_samples`` per rank."""
    weights = sample_weights(labels, num_classes, power)
    per_rank = per_rank_samples(len(weights), world_size) if num_samples is None else num_samples
    return DrawWithReplacement(len(weights), per_rank, weights, seed, rank, world_size)


class BalancedClassSampler(ShardedSampler):
    """Equilibrium sampler: cycles through the classes in shuffled rounds, so every window of K consecutive
    indices holds one image of each of the K classes and each batch is (near-)exactly class balanced.

    Within a class, images are drawn without replacement from a reshuffled cycle, so minority images repeat
    only after all of them were seen. Call ``set_epoch`` (Lightning does) for a new order each epoch.
    Under DDP the rounds of one draw are dealt out to the ranks in turn (round j to rank j mod W): every rank's
    stream is still made of whole rounds (balanced batches), the shards are disjoint, and a class's images cycle
    without replacement over all ranks together. ``num_samples`` is per rank (default: ``len(labels)`` in all).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels_arr = np.asarray(labels, dtype=np.int64)
        if len(labels_arr) == 0:
            raise UserInputError("BalancedClassSampler needs at least one labeled image")
        per_rank = per_rank_samples(len(labels_arr), world_size) if num_samples is None else int(num_samples)
        super().__init__(per_rank, seed, rank, world_size)
        self.labels = labels_arr
        self.classes = np.unique(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]

    def _rounds(self, rng: np.random.Generator) -> Iterator[list[int]]:
        """Endless rounds, each one image of every class in a shuffled class order."""
        pools = [rng.permutation(members) for members in self.by_class]
        cursors = [0] * len(pools)
        while True:
            round_: list[int] = []
            for k in rng.permutation(len(pools)):
                if cursors[k] == len(pools[k]):
                    pools[k] = rng.permutation(self.by_class[k])
                    cursors[k] = 0
                round_.append(int(pools[k][cursors[k]]))
                cursors[k] += 1
            yield round_

    def __iter__(self) -> Iterator[int]:
        produced = 0
        if self.num_samples == 0:
            return
        for j, round_ in enumerate(self._rounds(self._rng())):
            if j % self.num_replicas != self.rank:
                continue
            for index in round_:
                yield index
                produced += 1
                if produced == self.num_samples:
                    return


def make_sampler(
    name: SamplerName,
    labels: np.ndarray,
    num_classes: int,
    *,
    power: float = 1.0,
    seed: int = 0,
    num_samples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Sampler[int] | None:
    """The one training-sampler factory: ``balanced``, ``weighted`` (P ~ n_class^-power) or ``none``.

    ``num_samples`` (per rank) fixes the epoch length: then ``none`` draws uniformly with replacement, so every
    sampler yields exactly that many indices on each rank. Without it, ``none`` returns None (a plain shuffled
    loader, which Lightning shards with its DistributedSampler) and the others draw ``len(labels)`` in all.
    """
    if name == "balanced":
        return BalancedClassSampler(labels, num_samples=num_samples, seed=seed, rank=rank, world_size=world_size)
    if name == "weighted":
        return weighted_sampler(
            labels, num_classes, power, seed, num_samples=num_samples, rank=rank, world_size=world_size
        )
    if name != "none":
        raise UserInputError(f"data.sampler={name!r}: expected none|weighted|balanced")
    if num_samples is None:
        return None
    return DrawWithReplacement(len(labels), num_samples, seed=seed, rank=rank, world_size=world_size)


def eval_sampler(n: int, rank: int, world_size: int) -> Sampler[int] | None:
    """Evaluation under DDP: rank r gets positions r, r + W, ... once each (Lightning's
    ``UnrepeatedDistributedSampler``) -- no padding repeats, so metrics synced across ranks equal a single-process
    evaluation. Every rank needs at least one image (DDP syncs buffers on the first evaluation forward), so a set
    smaller than the world keeps Lightning's padded sampler (None here)."""
    if world_size == 1 or n < world_size:
        return None
    return UnrepeatedDistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False)


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
