"""BloodCellDataModule: turns a data source into split, cached, augmented loaders (the ``TrainingData`` and
``EvaluationData`` of ``bloodcls.data.interface``); the split travels with the run and its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info
from torch.utils.data import DataLoader, Dataset

from bloodcls.data import split_plan as P
from bloodcls.data import splits as S
from bloodcls.data.cache import CacheMode
from bloodcls.data.class_map import ClassMapSpec, MappedSource, resolve_source
from bloodcls.data.datasets import ConcatArrays, ImageArrayDataset, IndexedArrayView
from bloodcls.data.interface import LoaderRequest, PseudoLabels
from bloodcls.data.loaders import LoaderSettings, pseudo_round_loader, train_loader
from bloodcls.data.loading import DecodeSettings, FolderImages, LoadedData, load_folder, load_listing
from bloodcls.data.pools import make_pseudo_labels, pseudo_labeled, unlabeled_pool
from bloodcls.data.predict import PredictFolder
from bloodcls.data.sampling import SamplerName, class_counts, smote_oversample
from bloodcls.data.sources import DataSource, as_source
from bloodcls.data.transforms import TransformSpec, build_transform
from bloodcls.errors import UserInputError
from bloodcls.threads import auto_loader_workers, available_cpus, gpu_visible

DEFAULT_IMAGE_SIZE = 64  # px: the resolution of the CPU-friendly configs


class BloodCellDataModule(L.LightningDataModule):
    """Labeled / unlabeled / val / test / predict loaders over a blood-cell image source.

    Args:
        root: dataset location. Without ``source`` it picks the source: an ImageFolder tree ``root/<class>/<image>``,
            a ``path,label`` CSV, or a folder with ``bloodmnist*.npz``; ``None`` uses the synthetic cells. With a
            ``source`` that reads files it overrides the source's root; a source without one refuses it.
        source: where images come from, by ``class_path`` (``bloodcls.data.FolderSource``, ``CsvSource``,
            ``MedMnistSource``, ``SyntheticSource`` or your own ``DataSource``).
        image_size: training resolution; images are decoded and resized to it once (decode-once cache).
            ``None``: the backbone's pretrained input size when the model loads pretrained weights (the
            CLI resolves it from the model's config), else ``DEFAULT_IMAGE_SIZE`` (64).
        center_crop: keep the central fraction of each side of every image before resizing it to ``image_size``
            (at decode time, from the source pixels; 1: the whole image). A PBC cell sits in the centre half of
            its frame, so 0.5 gives it twice the pixels per side at the same training cost. Checkpoints record it,
            so test / predict / export crop new images the same way.
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
        num_workers: loader processes; ``None``: none when training on the CPU (they would take the model's
            cores), else half the CPUs up to 8 (``bloodcls.threads.auto_loader_workers``).
        cache: ``memory`` or ``disk`` (memory-mapped ``.npy`` under ``cache_dir``, reused across runs).
        max_image_pixels: larger images are skipped (decompression-bomb guard).
        predict_root: folder (or file) of images for ``bloodcls predict``; default is the test split.
        unlabeled_root: a folder of extra unlabeled images added to the unlabeled pool.
        unlabeled_batch_size: unlabeled images per step for semi-supervised strategies (default:
            ``batch_size`` times the strategy's ``unlabeled_ratio``, e.g. FixMatch's mu).
        steps_per_epoch: fixed optimisation steps per epoch (samplers draw with replacement); recommended for
            semi-supervised runs, where a 10-labels-per-class set would otherwise make one-step epochs. Under DDP
            it is the step count of every rank (each batch is per device; the ranks draw disjoint shares).
        class_map: evaluate on another dataset (external-lab evaluation): ``{external folder: model class}`` or a
            YAML file of it (``null`` excludes a folder). The whole dataset under ``root`` is then the evaluation
            set (no split, no training); unmapped folders are excluded with a warning. ``bloodcls test --class_map
            map.yaml`` sets it and ``model_classes`` from the checkpoint.
        model_classes: the evaluated model's classes in label order (needed with ``class_map``).
    """

    def __init__(
        self,
        root: str | None = None,
        source: DataSource | None = None,
        image_size: int | None = None,
        center_crop: float = 1.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
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
        predict_root: str | None = None,
        unlabeled_root: str | None = None,
        unlabeled_batch_size: int | None = None,
        steps_per_epoch: int | None = None,
        decode_workers: int | None = None,
        class_map: ClassMapSpec | None = None,
        model_classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        source = as_source(source)
        if isinstance(self.hparams.get("source"), DataSource):
            # Checkpoints hold plain data (Lightning reloads them with weights_only=True), never a pickled object.
            self.hparams["source"] = source.config() if source is not None else None
        self.source: DataSource = resolve_source(root, source, class_map, model_classes)
        self.evaluation_only = class_map is not None
        image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if batch_size < 1:
            raise UserInputError(f"data.batch_size={batch_size} must be >= 1")
        self.split_settings = P.SplitSettings(
            val_fraction, test_fraction, n_folds, fold, labels_per_class, labeled_fraction, val_per_class, split_seed
        )
        self.split_settings.validate()
        self.decode_settings = DecodeSettings(
            image_size, cache, cache_dir, max_image_pixels, decode_workers, center_crop
        )
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        if num_workers is None:  # the CLI resolves it from trainer.accelerator first; plain Python: a visible GPU
            num_workers = auto_loader_workers(available_cpus(), gpu_visible())
        self.num_workers = num_workers
        self.split_file = split_file
        self.sampler: SamplerName = sampler
        self.sampler_power = sampler_power
        self.smote = smote
        self.unlabeled_root = unlabeled_root
        self.unlabeled_batch_size = unlabeled_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.train_views = {"image": build_transform(train_transform, image_size)}
        self.eval_views = {"image": build_transform(eval_transform, image_size)}
        self.predict_folder = PredictFolder(predict_root, self.decode_settings) if predict_root is not None else None
        self.request = LoaderRequest()  # supervised batches until a strategy asks for more
        self._class_names: list[str] | None = None
        self._data: LoadedData | None = None
        self._subsets: np.ndarray | None = None
        self._restored_split: P.SavedSplit | None = None
        self._extra_unlabeled: FolderImages | None = None
        self._smote: tuple[np.ndarray, np.ndarray] | None = None
        self._pseudo: PseudoLabels | None = None

    @property
    def root(self) -> str | None:
        return self.source.root

    @property
    def class_names(self) -> list[str]:
        """Class names in label order; cheap before ``setup`` (a directory listing)."""
        if self._data is not None:
            return self._data.listing.class_names
        if self._class_names is None:
            self._class_names = self.source.class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------------ data and split
    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_folder is not None:
            return  # a folder to classify does not need the training source at all
        if stage == "fit" and self.evaluation_only:
            raise UserInputError("data.class_map is for evaluating on another dataset (test / validate), not for fit")
        if stage == "fit" and not np.any(self.subsets == S.VAL):
            raise UserInputError(
                "data.val_fraction leaves no validation images; checkpoint selection needs a validation split"
            )

    @property
    def data(self) -> LoadedData:
        if self._data is None:
            listing = self.source.listing(self.image_size)
            self._data = load_listing(listing, self.decode_settings, every_class=not self.evaluation_only)
        return self._data

    @property
    def subsets(self) -> np.ndarray:
        """Subset name per listing row (``train|unlabeled|val|test|excluded``), computed once."""
        if self._subsets is None:
            saved = self._restored_split
            if saved is None and self.split_file is not None:
                saved = P.SavedSplit.from_csv(self.split_file)
            if self.evaluation_only:  # another dataset: all of it is the evaluation set
                self._subsets = np.where(self.data.usable, S.TEST, S.EXCLUDED).astype(object)
            elif saved is not None:
                self._subsets = P.apply_saved_split(self.data, saved, self.root)
            else:
                self._subsets = P.plan_split(self.data, self.split_settings)
        return self._subsets

    def rows_of(self, subset: str) -> np.ndarray:
        if self.evaluation_only and subset == S.VAL:
            subset = S.TEST  # `validate` on an external dataset evaluates all of it too
        return np.flatnonzero(self.subsets == subset)

    def train_class_counts(self) -> np.ndarray:
        """Images per class in the labeled training set (after SMOTE), for class-weighted losses."""
        real = self.data.listing.labels[self.rows_of(S.TRAIN)]
        return class_counts(np.concatenate([real, self._smote_extra()[1]]), self.num_classes)

    # ------------------------------------------------------------------ datasets
    def _dataset(self, subset: str, views: dict[str, Any]) -> ImageArrayDataset:
        data, rows = self.data, self.rows_of(subset)
        return ImageArrayDataset(IndexedArrayView(data.images, rows), data.listing.labels[rows], rows, views)

    def _smote_extra(self) -> tuple[np.ndarray, np.ndarray]:
        """SMOTE images made from the training split only (never val/test), computed once."""
        if not self.smote:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8), np.zeros(0, np.int64)
        if self._smote is None:
            rows = self.rows_of(S.TRAIN)
            images = np.asarray(self.data.images[rows])
            self._smote = smote_oversample(images, self.data.listing.labels[rows], self.split_settings.split_seed)
            rank_zero_info(f"SMOTE: synthesized {len(self._smote[1])} minority-class training images")
        return self._smote

    def train_dataset(self) -> ImageArrayDataset:
        """Labeled training images followed by SMOTE's (``index`` -1), with the train views."""
        data, rows = self.data, self.rows_of(S.TRAIN)
        extra_images, extra_labels = self._smote_extra()
        images = ConcatArrays(IndexedArrayView(data.images, rows), extra_images)
        labels = np.concatenate([data.listing.labels[rows], extra_labels])
        index = np.concatenate([rows, np.full(len(extra_labels), -1, dtype=np.int64)])
        return ImageArrayDataset(images, labels, index, self.train_views)

    def labeled_dataset(self, views: dict[str, Any] | None = None) -> ImageArrayDataset:
        """The labeled training images (no SMOTE), e.g. to embed them for label propagation."""
        return self._dataset(S.TRAIN, views or self.eval_views)

    def unlabeled_dataset(self, views: dict[str, Any] | None = None) -> ImageArrayDataset:
        """The unlabeled pool: the ``unlabeled`` subset plus ``unlabeled_root`` images (see ``unlabeled_pool``)."""
        if self.unlabeled_root is not None and self._extra_unlabeled is None:
            self._extra_unlabeled = load_folder(
                self.unlabeled_root, self.decode_settings, "data.unlabeled_root", "data_report.json"
            )
        return unlabeled_pool(self.data, self.rows_of(S.UNLABELED), self._extra_unlabeled, views or self.eval_views)

    # ------------------------------------------------------------------ loaders
    def request_loaders(self, request: LoaderRequest) -> None:
        """Set the views and unlabeled share the next training loader serves (a strategy's ``setup("fit")``)."""
        self.request = request

    def loader_settings(self) -> LoaderSettings:
        """Batching and sampling of this process: our samplers shard themselves by (rank, world size); a plain
        shuffled loader is sharded by Lightning's DistributedSampler."""
        trainer = self.trainer
        rank, world = (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))
        return LoaderSettings(
            self.batch_size,
            self.eval_batch_size,
            self.num_workers,
            self.sampler,
            self.sampler_power,
            int(self.split_settings.split_seed),
            self.num_classes,
            self.steps_per_epoch,
            self.unlabeled_batch_size,
            rank,
            world,
        )

    def _views(self, specs: dict[str, str | None] | None) -> dict[str, Any]:
        """Views a strategy asks for: preset names, or None for the configured ``train_transform``."""
        if specs is None:
            return self.train_views
        return {
            key: self.train_views["image"] if spec is None else build_transform(spec, self.image_size)
            for key, spec in specs.items()
        }

    def train_dataloader(self) -> DataLoader[Any] | CombinedLoader:
        labeled = self.train_dataset()
        labeled.views = self._views(self.request.labeled_views)
        if len(labeled) == 0:
            raise UserInputError("the training split is empty; check data.val_fraction / data.test_fraction")
        settings = self.loader_settings()
        if self._pseudo is not None:
            pseudo_set = pseudo_labeled(self.unlabeled_dataset(self.train_views), self._pseudo, self.train_views)
            return pseudo_round_loader(settings, labeled, pseudo_set, self._pseudo)
        return train_loader(
            settings, labeled, self.request, lambda: self.unlabeled_dataset(self._views(self.request.unlabeled_views))
        )

    def eval_loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        """A deterministic loader over any dataset (no shuffling), for relabeling passes."""
        return self.loader_settings().eval_loader(dataset, shard=False)

    def set_pseudo_labels(
        self, positions: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, labeled_ratio: float = 0.5
    ) -> None:
        """Install a self-training round's accepted pseudo-labels; the next train loader uses them."""
        self._pseudo = make_pseudo_labels(positions, labels, weights, labeled_ratio)

    @property
    def pseudo_labels(self) -> PseudoLabels | None:
        return self._pseudo

    def val_dataloader(self) -> DataLoader[Any]:
        return self.loader_settings().eval_loader(self._dataset(S.VAL, self.eval_views))

    def test_dataloader(self) -> DataLoader[Any]:
        if len(self.rows_of(S.TEST)) == 0:
            raise UserInputError("the test split is empty (data.test_fraction=0?)")
        return self.loader_settings().eval_loader(self._dataset(S.TEST, self.eval_views))

    def predict_dataloader(self) -> DataLoader[Any]:
        folder = self.predict_folder
        dataset = self._dataset(S.TEST, self.eval_views) if folder is None else folder.dataset(self.eval_views)
        return self.loader_settings().eval_loader(dataset, shard=False)

    # ------------------------------------------------------------------ EvaluationData and run records
    def predict_paths(self) -> list[str]:
        """File (or id) of each ``index`` the predict loader yields."""
        return self.sample_ids() if self.predict_folder is None else self.predict_folder.paths()

    def predict_skipped(self) -> list[tuple[str, str]]:
        return [] if self.predict_folder is None else self.predict_folder.skipped()

    def sample_ids(self) -> list[str]:
        return list(self.data.listing.ids)

    def state_dict(self) -> dict[str, Any]:
        """The split travels inside every checkpoint, so ``bloodcls test`` on it evaluates the same images."""
        if self._subsets is None:
            return {}
        return {"class_names": list(self.class_names), "split": P.split_state(self.data, self.subsets)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict or "split" not in state_dict:
            return
        saved_names = state_dict.get("class_names")
        if saved_names is not None and list(saved_names) != list(self.class_names):
            raise UserInputError(
                f"the checkpoint was trained on classes {saved_names}, but data.root has {self.class_names}"
            )
        if self.evaluation_only:
            return  # the checkpoint's split belongs to its training data, not to the external dataset
        if self.split_file is None:  # an explicit split_file given by the user wins
            self._restored_split = P.SavedSplit.from_state(state_dict["split"])
            self._subsets = None

    def data_report(self) -> dict[str, Any]:
        """What was found in the data: counts, skipped files, duplicates, split sizes per class."""
        report = P.data_report(self.data, self.subsets, self.source.kind, self.root, self.image_size)
        report["center_crop"] = self.decode_settings.center_crop
        if isinstance(self.source, MappedSource) and self.source.mapping is not None:
            report["class_map"] = self.source.mapping.report()
        return report

    def split_summary(self) -> str:
        """Subset sizes in one line, e.g. ``train 120, val 30, test 30``."""
        return P.split_summary(self.data, self.subsets)

    def write_split(self, directory: str | Path) -> Path:
        """Write ``split.csv`` and ``data_report.json`` into ``directory``; returns the split file."""
        return P.write_split_files(directory, self.data, self.subsets, self.data_report())
