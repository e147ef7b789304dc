"""BloodCellDataModule: turns a source (folder, CSV, BloodMNIST, synthetic) into split, cached, augmented
loaders, and records the split next to the run so evaluation uses exactly the held-out images."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Sampler

from bloodcls.data import splits as S
from bloodcls.data.cache import CacheMode, decode_files, hash_arrays, resize_arrays
from bloodcls.data.datasets import ConcatArrays, ImageArrayDataset, IndexedArrayView
from bloodcls.data.interface import LoaderRequest
from bloodcls.data.sampling import (
    BalancedClassSampler,
    DrawWithReplacement,
    EvalShardSampler,
    SamplerName,
    class_counts,
    smote_oversample,
    weighted_sampler,
)
from bloodcls.data.sources import (
    SourceListing,
    SourceName,
    bloodmnist_listing,
    list_csv_manifest,
    list_image_folder,
    list_predict_folder,
    peek_class_names,
    resolve_source,
    synthetic_listing,
)
from bloodcls.data.transforms import TransformSpec, build_transform
from bloodcls.errors import UserInputError

log = logging.getLogger(__name__)
MAX_WARNED_FILES = 10


@dataclass
class LoadedData:
    """A source after decoding, validation and deduplication."""

    listing: SourceListing
    images: np.ndarray  # (N, S, S, 3) uint8 over all listed rows (bad rows are zeros)
    hashes: list[str]
    usable: np.ndarray  # (N,) bool: decoded fine and kept by deduplication
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dedupe: S.DedupeResult | None = None
    cache_file: str | None = None


DEFAULT_IMAGE_SIZE = 64  # px: the resolution of the CPU-friendly configs


@dataclass
class PseudoLabels:
    """Accepted pseudo-labels for a self-training round, addressed by position in the unlabeled pool."""

    positions: np.ndarray  # (M,) int64 positions in ``unlabeled_pool()``
    labels: np.ndarray  # (M,) int64
    weights: np.ndarray  # (M,) float32 per-sample loss weights
    labeled_ratio: float = 0.5  # share of each batch drawn from the labeled set


class BloodCellDataModule(L.LightningDataModule):
    """Labeled / unlabeled / val / test / predict loaders over a blood-cell image source.

    Args:
        root: dataset location: an ImageFolder tree ``root/<class>/<image>``, a ``path,label`` CSV, or a
            folder with ``bloodmnist*.npz``. ``None`` uses the embedded synthetic dataset.
        source: ``auto`` picks from ``root``; or force ``folder|csv|bloodmnist|synthetic``.
        image_size: training resolution; images are decoded and resized to it once (decode-once cache).
            ``None``: the backbone's pretrained input size when the model loads pretrained weights (the
            CLI resolves it from the model's config), else ``DEFAULT_IMAGE_SIZE`` (64).
        val_fraction, test_fraction: stratified held-out fractions per class.
        n_folds, fold: stratified k-fold instead; ``fold`` is the test fold.
        labels_per_class, labeled_fraction: labeled budget of the training split; the rest becomes the
            unlabeled pool.
        val_per_class: keep only this many validation images per class (a realistic small labeled validation
            set for few-label experiments); the rest of the validation split is left unused, so the unlabeled
            pool stays the same across budgets.
        split_seed: seed of the split and of the labeled budget.
        split_file: reuse a ``split.csv`` written by an earlier run (matched by content hash).
        sampler: ``none``, ``weighted`` (P ~ n_class^-sampler_power) or ``balanced`` (equilibrium sampler).
        smote: add SMOTE-synthesized minority-class images to the labeled training set.
        train_transform, eval_transform: preset name (``eval|weak|strong``) or a list of albumentations
            transforms ``[{name: HorizontalFlip, p: 0.5}, ...]``.
        cache: ``memory`` or ``disk`` (memory-mapped ``.npy`` under ``cache_dir``, reused across runs).
        max_image_pixels: larger images are skipped (decompression-bomb guard).
        synthetic_per_class, synthetic_seed: size and seed of the synthetic dataset.
        bloodmnist_size: which BloodMNIST resolution to read (28, 64, 128, 224).
        use_official_split: for BloodMNIST, keep its published train/val/test split.
        predict_root: folder (or file) of images for ``bloodcls predict``; default is the test split.
        unlabeled_root: a folder of extra unlabeled images added to the unlabeled pool.
        unlabeled_batch_size: unlabeled images per step for semi-supervised strategies (default:
            ``batch_size`` times the strategy's ``unlabeled_ratio``, e.g. FixMatch's mu).
        steps_per_epoch: fixed optimisation steps per epoch (samplers draw with replacement); recommended for
            semi-supervised runs, where a 10-labels-per-class set would otherwise make one-step epochs. Under DDP
            it is the step count of every rank (each batch is per device; the ranks draw disjoint shares).
    """

    def __init__(
        self,
        root: str | None = None,
        source: SourceName = "auto",
        image_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        n_folds: int | None = None,
        fold: int = 0,
        labels_per_class: int | None = None,
        labeled_fraction: float | None = None,
        val_per_class: int | None = None,
        split_seed: int = 0,
        split_file: str | None = None,
        sampler: SamplerName = "none",
        sampler_power: float = 1.0,
        smote: bool = False,
        train_transform: TransformSpec = "weak",
        eval_transform: TransformSpec = "eval",
        cache: CacheMode = "disk",
        cache_dir: str | None = None,
        max_image_pixels: int = 100_000_000,
        synthetic_per_class: int = 200,
        synthetic_seed: int = 0,
        bloodmnist_size: int = 28,
        use_official_split: bool = True,
        predict_root: str | None = None,
        unlabeled_root: str | None = None,
        unlabeled_batch_size: int | None = None,
        steps_per_epoch: int | None = None,
        decode_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if image_size < 8:
            raise UserInputError(f"data.image_size={image_size} must be >= 8")
        if batch_size < 1:
            raise UserInputError(f"data.batch_size={batch_size} must be >= 1")
        if labels_per_class is not None and labeled_fraction is not None:
            raise UserInputError("data.labels_per_class and data.labeled_fraction are exclusive; set one")
        S.stratified_split([0, 1], val_fraction, test_fraction) if n_folds is None else None  # validates
        self.root = root
        self.source = source
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_file = split_file
        self.sampler = sampler
        self.train_views = {"image": build_transform(train_transform, image_size)}
        self.eval_views = {"image": build_transform(eval_transform, image_size)}
        self._class_names: list[str] | None = None
        self._data: LoadedData | None = None
        self._subsets: np.ndarray | None = None
        self._restored_split: dict[str, list[str]] | None = None
        self._predict: tuple[SourceListing, np.ndarray, list[tuple[str, str]]] | None = None
        self._extra_unlabeled: tuple[SourceListing, np.ndarray, np.ndarray] | None = None
        self._pseudo: PseudoLabels | None = None
        self._request = LoaderRequest()
        self._run_files_written = False

    # ------------------------------------------------------------------ classes
    @property
    def class_names(self) -> list[str]:
        """Class names in label order; cheap before ``setup`` (a directory listing)."""
        if self._data is not None:
            return self._data.listing.class_names
        if self._class_names is None:
            self._class_names = peek_class_names(self.root, self.source)
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str) -> None:
        if stage == "predict" and self.hparams.predict_root is not None:
            self._load_predict()  # a folder to classify does not need the training source at all
            return
        if self._data is None:
            self._data = self._load()
        if stage == "fit":
            subsets = self.subsets
            if not np.any(subsets == S.VAL):
                raise UserInputError(
                    "data.val_fraction leaves no validation images; checkpoint selection needs a validation split"
                )

    def _listing(self) -> SourceListing:
        kind = resolve_source(self.root, self.source)
        hp = self.hparams
        if kind == "synthetic":
            return synthetic_listing(hp.synthetic_per_class, self.image_size, hp.synthetic_seed)
        if self.root is None:
            raise UserInputError(f"data.root is required for source '{kind}'")
        if kind == "folder":
            return list_image_folder(self.root)
        if kind == "csv":
            return list_csv_manifest(self.root)
        return bloodmnist_listing(self.root, hp.bloodmnist_size)

    def _decode(self, listing: SourceListing) -> tuple[np.ndarray, list[str], dict[int, str], str | None]:
        hp = self.hparams
        if listing.arrays is not None:
            hashes = hash_arrays(listing.arrays)
            images = resize_arrays(listing.arrays, self.image_size, hp.decode_workers)
            return images, hashes, {}, None
        decoded = decode_files(
            listing.ids,
            self.image_size,
            mode=hp.cache,
            cache_dir=hp.cache_dir,
            max_pixels=hp.max_image_pixels,
            workers=hp.decode_workers,
        )
        cache_file = str(decoded.cache_file) if decoded.cache_file else None
        return decoded.images, decoded.hashes, decoded.errors, cache_file

    def _load(self) -> LoadedData:
        listing = self._listing()
        images, hashes, errors, cache_file = self._decode(listing)
        skipped = list(listing.skipped) + [(listing.ids[i], reason) for i, reason in sorted(errors.items())]
        _warn_skipped(skipped)
        decoded_ok = np.ones(len(listing.ids), dtype=bool)
        decoded_ok[list(errors)] = False
        ok_rows = np.flatnonzero(decoded_ok)
        dedupe = S.deduplicate([hashes[i] for i in ok_rows], listing.labels[ok_rows])
        usable = np.zeros(len(listing.ids), dtype=bool)
        usable[ok_rows[dedupe.keep]] = True
        # Translate group member positions back to listing rows for the report.
        dedupe.groups = [[int(ok_rows[i]) for i in g] for g in dedupe.groups]
        dedupe.conflicts = [[int(ok_rows[i]) for i in g] for g in dedupe.conflicts]
        if dedupe.groups:
            rank_zero_info(
                f"deduplication: {len(dedupe.groups)} groups of identical images, "
                f"{len(dedupe.conflicts)} with conflicting labels; {int(decoded_ok.sum() - usable.sum())} "
                "copies not used"
            )
        for group in dedupe.conflicts:
            names = ", ".join(f"{listing.ids[i]} ({listing.class_names[listing.labels[i]]})" for i in group)
            rank_zero_warn(f"identical images filed under different classes, all dropped: {names}")
        data = LoadedData(listing, images, hashes, usable, skipped, dedupe, cache_file)
        _check_classes(data)
        return data

    @property
    def data(self) -> LoadedData:
        if self._data is None:
            self._data = self._load()
        return self._data

    # ------------------------------------------------------------------ split
    @property
    def subsets(self) -> np.ndarray:
        """Subset name per listing row (``train|unlabeled|val|test|excluded``), computed once."""
        if self._subsets is None:
            self._subsets = self._resolve_split()
        return self._subsets

    def _resolve_split(self) -> np.ndarray:
        data = self.data
        if self._restored_split is not None:
            return self._apply_saved_split(self._restored_split["hash"], self._restored_split["subset"], "checkpoint")
        if self.split_file is not None:
            rows = S.read_split_csv(self.split_file)
            return self._apply_saved_split([r.hash for r in rows], [r.subset for r in rows], self.split_file)
        hp = self.hparams
        rows = np.flatnonzero(data.usable)
        labels = data.listing.labels[rows]
        keys = [data.hashes[i] for i in rows]
        names = data.listing.class_names
        if data.listing.official_split is not None and hp.use_official_split and hp.n_folds is None:
            sub = np.asarray(data.listing.official_split[rows], dtype=object)
        elif hp.n_folds is not None:
            sub = S.kfold_split(labels, hp.n_folds, hp.fold, hp.val_fraction, hp.split_seed, keys, names)
        else:
            sub = S.stratified_split(labels, hp.val_fraction, hp.test_fraction, hp.split_seed, keys)
        sub = S.labeled_budget(labels, sub, hp.labels_per_class, hp.labeled_fraction, hp.split_seed, keys, names)
        if hp.val_per_class is not None:
            sub = S.cap_subset(labels, sub, S.VAL, hp.val_per_class, hp.split_seed, keys)
        subsets = np.full(len(data.hashes), S.EXCLUDED, dtype=object)
        subsets[rows] = sub
        return subsets

    def _apply_saved_split(self, hashes: list[str], subsets: list[str], origin: str) -> np.ndarray:
        """Map a saved split onto the current listing by content hash (robust to moved or renamed files)."""
        data = self.data
        by_hash = dict(zip(hashes, subsets, strict=True))
        out = np.full(len(data.hashes), S.EXCLUDED, dtype=object)
        for row in np.flatnonzero(data.usable):
            out[row] = by_hash.get(data.hashes[row], S.EXCLUDED)
        present = {data.hashes[r] for r in np.flatnonzero(data.usable)}
        missing = [h for h, s in by_hash.items() if s == S.TEST and h not in present]
        if missing:
            raise UserInputError(
                f"split from {origin}: {len(missing)} test images are not found under data.root "
                f"({self.root}); evaluate on the same data the split was made from"
            )
        return out

    def rows_of(self, subset: str) -> np.ndarray:
        return np.flatnonzero(self.subsets == subset)

    def train_class_counts(self) -> np.ndarray:
        """Images per class in the labeled training set (after SMOTE), for class-weighted losses."""
        return class_counts(self._train_labels(), self.num_classes)

    # ------------------------------------------------------------------ datasets
    def _dataset(self, subset: str, views: dict[str, Any]) -> ImageArrayDataset:
        data, rows = self.data, self.rows_of(subset)
        return ImageArrayDataset(IndexedArrayView(data.images, rows), data.listing.labels[rows], rows, views)  # type: ignore[arg-type]

    def _smote_extra(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.hparams.smote:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8), np.zeros(0, np.int64)
        if not hasattr(self, "_smote_cache"):
            rows = self.rows_of(S.TRAIN)
            images = np.asarray(self.data.images[rows])
            self._smote_cache = smote_oversample(images, self.data.listing.labels[rows], self.hparams.split_seed)
            rank_zero_info(f"SMOTE: synthesized {len(self._smote_cache[1])} minority-class training images")
        return self._smote_cache

    def _train_labels(self) -> np.ndarray:
        real = self.data.listing.labels[self.rows_of(S.TRAIN)]
        return np.concatenate([real, self._smote_extra()[1]])

    def train_dataset(self) -> ImageArrayDataset:
        data, rows = self.data, self.rows_of(S.TRAIN)
        extra_images, extra_labels = self._smote_extra()
        images = ConcatArrays(IndexedArrayView(data.images, rows), extra_images)
        labels = np.concatenate([data.listing.labels[rows], extra_labels])
        index = np.concatenate([rows, np.full(len(extra_labels), -1, dtype=np.int64)])
        return ImageArrayDataset(images, labels, index, self.train_views)  # type: ignore[arg-type]

    def _train_sampler(self, labels: np.ndarray) -> Sampler[int] | None:
        seed = int(self.hparams.split_seed)
        rank, world = self._shard()
        if self.sampler == "weighted":
            power = self.hparams.sampler_power
            return weighted_sampler(labels, self.num_classes, power, seed, rank=rank, world_size=world)
        if self.sampler == "balanced":
            return BalancedClassSampler(labels, seed=seed, rank=rank, world_size=world)
        return None

    def _shard(self) -> tuple[int, int]:
        """(rank, world size) of this process; (0, 1) outside a distributed trainer. Our samplers shard themselves;
        a plain shuffled loader is sharded by Lightning's DistributedSampler."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _eval_sampler(self, n: int) -> Sampler[int] | None:
        """Under DDP, val/test images are split across ranks without the padding repeats of a DistributedSampler,
        so synced metrics count every image once. Every rank needs at least one image: DDP syncs buffers on the
        first evaluation forward, so a tiny set (fewer images than ranks) keeps Lightning's padded sampler."""
        rank, world = self._shard()
        if world == 1 or n < world:
            return None
        return EvalShardSampler(n, rank, world)

    def _loader(
        self, dataset: ImageArrayDataset, batch_size: int, train: bool, sampler: Sampler[int] | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _views(self, specs: dict[str, str | None] | None) -> dict[str, Any]:
        """Views a strategy asks for: preset names, or None for the configured ``train_transform``."""
        if specs is None:
            return self.train_views
        return {
            key: self.train_views["image"] if spec is None else build_transform(spec, self.image_size)
            for key, spec in specs.items()
        }

    def _epoch_sampler(self, labels: np.ndarray, batch_size: int, sampler: str) -> Sampler[int] | None:
        """The configured sampler; with ``steps_per_epoch`` every sampler draws exactly steps x batch indices on
        each rank (under DDP: disjoint shares of one draw of world x steps x batch)."""
        steps = self.hparams.steps_per_epoch
        seed = int(self.hparams.split_seed)
        rank, world = self._shard()
        if steps is None:
            return (
                self._train_sampler(labels)
                if sampler == self.sampler
                else _named_sampler(labels, sampler, self.num_classes, seed, rank, world)
            )
        n = int(steps) * batch_size
        if sampler == "balanced":
            return BalancedClassSampler(labels, num_samples=n, seed=seed, rank=rank, world_size=world)
        if sampler == "weighted":
            power = self.hparams.sampler_power
            return weighted_sampler(labels, self.num_classes, power, seed, num_samples=n, rank=rank, world_size=world)
        return DrawWithReplacement(len(labels), n, seed=seed, rank=rank, world_size=world)

    def request_loaders(self, request: LoaderRequest) -> None:
        self._request = request

    def train_dataloader(self) -> Any:
        self._write_run_files()
        labeled = self.train_dataset()
        labeled.views = self._views(self._request.labeled_views)
        if len(labeled) == 0:
            raise UserInputError("the training split is empty; check data.val_fraction / data.test_fraction")
        if self._pseudo is not None:
            return self._pseudo_round_loaders(labeled)
        unlabeled_views = self._request.unlabeled_views
        labeled_loader = self._loader(
            labeled, self.batch_size, True, self._epoch_sampler(labeled.labels, self.batch_size, self.sampler)
        )
        if unlabeled_views is None:
            return labeled_loader
        pool = self.unlabeled_dataset(self._views(unlabeled_views))
        if len(pool) == 0:
            raise UserInputError(
                "this strategy needs unlabeled images: set data.labels_per_class / data.labeled_fraction, or "
                "data.unlabeled_root"
            )
        ratio = self._request.unlabeled_ratio
        batch = self.hparams.unlabeled_batch_size or max(1, int(round(self.batch_size * ratio)))
        unlabeled_loader = self._loader(
            pool, batch, True, self._epoch_sampler(np.zeros(len(pool), np.int64), batch, "none")
        )
        return CombinedLoader({"labeled": labeled_loader, "unlabeled": unlabeled_loader}, mode="max_size_cycle")

    def _pseudo_round_loaders(self, labeled: ImageArrayDataset) -> CombinedLoader:
        """Self-training round: each batch holds ``labeled_ratio`` labeled and the rest pseudo-labeled images,
        the latter drawn with the balanced sampler over pseudo-label classes (accepted labels are imbalanced)."""
        pseudo = self._pseudo
        assert pseudo is not None
        n_labeled = min(self.batch_size - 1, max(1, int(round(self.batch_size * pseudo.labeled_ratio))))
        n_pseudo = self.batch_size - n_labeled
        pool = self.unlabeled_dataset(self.train_views)
        images = IndexedArrayView(pool.images, pseudo.positions)  # type: ignore[arg-type]
        dataset = ImageArrayDataset(
            images,  # type: ignore[arg-type]
            pool.labels[pseudo.positions],
            pool.rows[pseudo.positions],
            self.train_views,
            label_key="true_label",
            extras={"pseudo_label": pseudo.labels, "weight": pseudo.weights.astype(np.float32)},
        )
        steps = self.hparams.steps_per_epoch
        n = (int(steps) if steps else max(1, len(dataset) // n_pseudo)) * n_pseudo
        rank, world = self._shard()
        pseudo_sampler = BalancedClassSampler(
            pseudo.labels, num_samples=n, seed=int(self.hparams.split_seed), rank=rank, world_size=world
        )
        labeled_sampler = self._epoch_sampler(labeled.labels, n_labeled, self.sampler)
        return CombinedLoader(
            {
                "labeled": self._loader(labeled, n_labeled, True, labeled_sampler),
                "unlabeled": self._loader(dataset, n_pseudo, True, pseudo_sampler),
            },
            mode="max_size_cycle",
        )

    # ------------------------------------------------------------------ unlabeled pool
    def _load_extra_unlabeled(self) -> tuple[SourceListing, np.ndarray, np.ndarray]:
        if self._extra_unlabeled is None:
            listing = list_predict_folder(self.hparams.unlabeled_root)
            decoded = decode_files(
                listing.ids,
                self.image_size,
                mode=self.hparams.cache,
                cache_dir=self.hparams.cache_dir,
                max_pixels=self.hparams.max_image_pixels,
                workers=self.hparams.decode_workers,
            )
            _warn_skipped([(listing.ids[i], r) for i, r in sorted(decoded.errors.items())])
            self._extra_unlabeled = (listing, decoded.images, np.flatnonzero(decoded.ok))
        return self._extra_unlabeled

    def unlabeled_dataset(self, views: dict[str, Any] | None = None) -> ImageArrayDataset:
        """The unlabeled pool: the ``unlabeled`` subset plus ``unlabeled_root`` images. Items carry
        ``true_label`` (-1 when unknown; benchmark datasets know it -- it is logged, never trained on) and
        ``pool_index``, the position self-training uses to address pseudo-labels."""
        rows = self.rows_of(S.UNLABELED)
        images: Any = IndexedArrayView(self.data.images, rows)
        truth = self.data.listing.labels[rows]
        index = rows
        if self.hparams.unlabeled_root is not None:
            _, extra_images, ok = self._load_extra_unlabeled()
            images = ConcatArrays(images, np.asarray(extra_images)[ok])
            truth = np.concatenate([truth, np.full(len(ok), -1, dtype=np.int64)])
            index = np.concatenate([rows, np.full(len(ok), -1, dtype=np.int64)])
        positions = np.arange(len(truth), dtype=np.int64)
        return ImageArrayDataset(
            images, truth, index, views or self.eval_views, label_key="true_label", extras={"pool_index": positions}
        )

    def labeled_dataset(self, views: dict[str, Any] | None = None) -> ImageArrayDataset:
        """The labeled training images (no SMOTE), e.g. to embed them for label propagation."""
        return self._dataset(S.TRAIN, views or self.eval_views)

    def eval_loader(self, dataset: ImageArrayDataset) -> DataLoader:
        """A deterministic loader over any dataset (no shuffling), for relabeling passes."""
        return self._loader(dataset, self.eval_batch_size, False)

    def set_pseudo_labels(
        self, positions: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, labeled_ratio: float = 0.5
    ) -> None:
        """Install a self-training round's accepted pseudo-labels; the next train loader uses them."""
        if not 0.0 < labeled_ratio < 1.0:
            raise UserInputError(f"labeled_ratio={labeled_ratio} must be in (0, 1)")
        positions = np.asarray(positions, dtype=np.int64)
        weights = np.ones(len(positions), np.float32) if weights is None else np.asarray(weights, np.float32)
        self._pseudo = (
            None
            if len(positions) == 0
            else PseudoLabels(positions, np.asarray(labels, np.int64), weights, labeled_ratio)
        )

    @property
    def pseudo_labels(self) -> PseudoLabels | None:
        return self._pseudo

    def val_dataloader(self) -> DataLoader:
        dataset = self._dataset(S.VAL, self.eval_views)
        return self._loader(dataset, self.eval_batch_size, False, self._eval_sampler(len(dataset)))

    def test_dataloader(self) -> DataLoader:
        dataset = self._dataset(S.TEST, self.eval_views)
        if len(dataset) == 0:
            raise UserInputError("the test split is empty (data.test_fraction=0?)")
        return self._loader(dataset, self.eval_batch_size, False, self._eval_sampler(len(dataset)))

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_root is None:
            return self._loader(self._dataset(S.TEST, self.eval_views), self.eval_batch_size, False)
        listing, images, skipped = self._load_predict()
        ok = np.array([i for i in range(len(listing.ids)) if listing.ids[i] not in {s for s, _ in skipped}])
        ok = ok.astype(np.int64)
        dataset = ImageArrayDataset(IndexedArrayView(images, ok), np.full(len(ok), -1), ok, self.eval_views)  # type: ignore[arg-type]
        return self._loader(dataset, self.eval_batch_size, False)

    def _load_predict(self) -> tuple[SourceListing, np.ndarray, list[tuple[str, str]]]:
        if self._predict is None:
            listing = list_predict_folder(self.hparams.predict_root)
            decoded = decode_files(
                listing.ids,
                self.image_size,
                mode="memory",
                max_pixels=self.hparams.max_image_pixels,
                workers=self.hparams.decode_workers,
            )
            skipped = [(listing.ids[i], reason) for i, reason in sorted(decoded.errors.items())]
            _warn_skipped(skipped, "predictions_skipped.csv")
            self._predict = (listing, decoded.images, skipped)
        return self._predict

    def predict_paths(self) -> list[str]:
        """File (or id) of each ``index`` the predict loader yields."""
        if self.hparams.predict_root is None:
            return list(self.data.listing.ids)
        return list(self._load_predict()[0].ids)

    def predict_skipped(self) -> list[tuple[str, str]]:
        return [] if self.hparams.predict_root is None else list(self._load_predict()[2])

    def sample_ids(self) -> list[str]:
        return list(self.data.listing.ids)

    # ------------------------------------------------------------------ run records
    def state_dict(self) -> dict[str, Any]:
        """The split travels inside every checkpoint, so ``bloodcls test`` on it evaluates the same images."""
        if self._subsets is None:
            return {}
        rows = np.flatnonzero(self.subsets != S.EXCLUDED)
        return {
            "class_names": list(self.class_names),
            "split": {
                "hash": [self.data.hashes[i] for i in rows],
                "subset": [str(self.subsets[i]) for i in rows],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict or "split" not in state_dict:
            return
        saved_names = state_dict.get("class_names")
        if saved_names is not None and list(saved_names) != list(self.class_names):
            raise UserInputError(
                f"the checkpoint was trained on classes {saved_names}, but data.root has {self.class_names}"
            )
        if self.split_file is None:  # an explicit split_file given by the user wins
            self._restored_split = state_dict["split"]
            self._subsets = None

    def data_report(self) -> dict[str, Any]:
        """What was found in the data: counts, skipped files, duplicates, split sizes per class."""
        data = self.data
        ids = data.listing.ids
        dedupe = data.dedupe or S.DedupeResult(keep=np.zeros(0, np.int64))
        return {
            "source": resolve_source(self.root, self.source),
            "root": self.root,
            "image_size": self.image_size,
            "class_names": data.listing.class_names,
            "n_listed": len(ids),
            "n_usable": int(data.usable.sum()),
            "skipped": [{"file": f, "reason": r} for f, r in data.skipped],
            "duplicate_groups": [[ids[i] for i in g] for g in dedupe.groups],
            "label_conflicts": [[ids[i] for i in g] for g in dedupe.conflicts],
            "subset_counts": S.subset_counts(data.listing.labels, self.subsets, self.num_classes),
            "cache_file": data.cache_file,
        }

    def write_split(self, directory: str | Path) -> Path:
        data = self.data
        names = data.listing.class_names
        path = S.write_split_csv(
            Path(directory) / "split.csv",
            data.listing.ids,
            data.hashes,
            [names[i] for i in data.listing.labels],
            [str(s) for s in self.subsets],
        )
        (Path(directory) / "data_report.json").write_text(json.dumps(self.data_report(), indent=2))
        return path

    def _write_run_files(self) -> None:
        trainer = self.trainer
        if self._run_files_written or trainer is None:
            return
        # trainer.log_dir broadcasts from rank 0 under DDP: every rank must ask, or rank 0 waits forever.
        directory = Path(trainer.log_dir or trainer.default_root_dir)
        self._run_files_written = True
        if not trainer.is_global_zero:
            return
        path = self.write_split(directory)
        counts = S.subset_counts(self.data.listing.labels, self.subsets, self.num_classes)
        rank_zero_info(
            f"split written to {path}: "
            + ", ".join(f"{name} {sum(c)}" for name, c in counts.items() if name != S.EXCLUDED)
        )


def _named_sampler(
    labels: np.ndarray, name: str, num_classes: int, seed: int, rank: int = 0, world: int = 1
) -> Sampler[int] | None:
    if name == "balanced":
        return BalancedClassSampler(labels, seed=seed, rank=rank, world_size=world)
    if name == "weighted":
        return weighted_sampler(labels, num_classes, 1.0, seed, rank=rank, world_size=world)
    return None


def _warn_skipped(skipped: list[tuple[str, str]], listed_in: str = "data_report.json") -> None:
    if not skipped:
        return
    for name, reason in skipped[:MAX_WARNED_FILES]:
        rank_zero_warn(f"skipped {reason}" if name in reason else f"skipped {name}: {reason}")
    more = len(skipped) - MAX_WARNED_FILES
    tail = f" ({more} more not shown)" if more > 0 else ""
    rank_zero_warn(f"{len(skipped)} files skipped as unusable{tail}; all are listed in {listed_in}")


def _check_classes(data: LoadedData) -> None:
    names = data.listing.class_names
    if len(names) < 2:
        raise UserInputError(f"data.root: found {len(names)} class ({', '.join(names) or 'none'}); need at least 2")
    counts = np.bincount(data.listing.labels[data.usable], minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserInputError(f"data.root: class(es) {', '.join(empty)} have no usable images")
