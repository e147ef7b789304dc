"""BloodCellDataModule: splits, loaders, samplers, SMOTE, dedupe, split persistence."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodcls.data import BloodCellDataModule, SyntheticSource
from bloodcls.data import datamodule as datamodule_module
from bloodcls.data import splits as S


def _dm(**kwargs: object) -> BloodCellDataModule:
    defaults: dict[str, object] = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache": "memory"}
    return BloodCellDataModule(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_synthetic_subsets_are_disjoint_and_stratified() -> None:
    dm = _dm(source=SyntheticSource(20))
    dm.setup("fit")
    assert dm.num_classes == 5 and dm.class_names[0] == "basophil"
    counts = S.subset_counts(dm.data.listing.labels, dm.subsets, 5)
    assert counts["test"] == [3] * 5 and counts["val"] == [3] * 5 and counts["train"] == [14] * 5
    hashes = {s: {dm.data.hashes[i] for i in dm.rows_of(s)} for s in ("train", "val", "test")}
    assert not (hashes["train"] & hashes["test"]) and not (hashes["val"] & hashes["test"])


def test_batches_are_named_uint8_dicts() -> None:
    dm = _dm(source=SyntheticSource(10))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 32, 32)
    assert batch["label"].dtype == torch.int64
    labels = dm.data.listing.labels[batch["index"].numpy()]
    np.testing.assert_array_equal(labels, batch["label"].numpy())


def test_labels_per_class_makes_unlabeled_pool() -> None:
    dm = _dm(source=SyntheticSource(20), labels_per_class=4)
    dm.setup("fit")
    labels = dm.data.listing.labels
    assert Counter(labels[dm.rows_of("train")].tolist()) == {c: 4 for c in range(5)}
    assert len(dm.rows_of("unlabeled")) == 5 * 10
    assert dm.train_class_counts().tolist() == [4] * 5


@pytest.mark.parametrize(("labeled_ratio", "n_pseudo"), [(0.5, 8), (0.8, 2), (0.25, 24)])
def test_self_training_rounds_keep_the_labeled_batch_and_add_pseudo_labels(labeled_ratio: float, n_pseudo: int) -> None:
    # Every round presents as many labeled images per step as round 0 (and as supervised-only): the compute-matched
    # label-efficiency comparison rests on it. The pseudo-labeled images come on top.
    dm = _dm(source=SyntheticSource(12), labels_per_class=2, steps_per_epoch=2)
    dm.setup("fit")
    before = next(iter(dm.train_dataloader()))
    dm.set_pseudo_labels(np.arange(10), np.arange(10) % 5, labeled_ratio=labeled_ratio)
    batch, _, _ = next(iter(dm.train_dataloader()))  # a CombinedLoader yields (batch, batch_idx, loader_idx)
    assert len(before["label"]) == 8
    assert len(batch["labeled"]["label"]) == 8 and len(batch["unlabeled"]["pseudo_label"]) == n_pseudo


def test_balanced_sampler_and_smote_on_imbalanced_folder(tmp_path: Path, image_folder: Path) -> None:
    root = tmp_path / "imbalanced"
    shutil.copytree(image_folder, root)
    for p in sorted((root / "basophil").glob("*.png"))[6:]:
        p.unlink()  # basophil: 6 images, the others 24
    dm = _dm(root=str(root), sampler="balanced", val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert Counter(batch["label"].tolist())[0] >= 1  # the minority class shows up in the first batch
    smote = _dm(root=str(root), smote=True, val_fraction=0.2, test_fraction=0.2)
    smote.setup("fit")
    counts = smote.train_class_counts()
    assert counts[0] == counts.max()  # SMOTE filled basophils up to the majority count
    assert len(smote.train_dataset()) == counts.sum()


def test_smote_seeds_come_from_train_only_and_its_images_never_reach_val_or_test(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "imbalanced"
    shutil.copytree(image_folder, root)
    for p in sorted((root / "basophil").glob("*.png"))[6:]:
        p.unlink()
    seeds: list[np.ndarray] = []
    real_smote = datamodule_module.smote_oversample

    def recording(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        seeds.append(np.asarray(images).copy())
        return real_smote(images, labels, seed)

    monkeypatch.setattr(datamodule_module, "smote_oversample", recording)
    dm = _dm(root=str(root), smote=True, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    n_new = int(dm.train_class_counts().sum()) - len(dm.rows_of("train"))
    assert n_new > 0
    # The seeds are exactly the training images: no val/test image shaped a synthetic one.
    train_images = np.asarray(dm.data.images[dm.rows_of("train")])
    assert len(seeds) == 1 and np.array_equal(seeds[0], train_images)
    # Val/test loaders serve only listed rows of their own subset (SMOTE rows carry index -1).
    for subset, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        index = torch.cat([b["index"] for b in loader])
        assert sorted(index.tolist()) == sorted(dm.rows_of(subset).tolist())
        images = torch.cat([b["image"] for b in loader]).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(images, np.asarray(dm.data.images[index.numpy()]))
    train_index = torch.cat([b["index"] for b in dm.train_dataloader()])
    assert (train_index == -1).sum() > 0  # ...while the training loader does serve the synthetic images


def test_duplicates_and_label_conflicts_are_dropped_and_reported(tmp_path: Path, image_folder: Path) -> None:
    root = tmp_path / "dups"
    shutil.copytree(image_folder, root)
    src = root / "monocyte" / "monocyte_0000.png"
    shutil.copy(src, root / "monocyte" / "copy_same_class.png")
    conflict = root / "lymphocyte" / "lymphocyte_0000.png"
    shutil.copy(conflict, root / "neutrophil" / "filed_twice.png")
    dm = _dm(root=str(root))
    dm.setup("fit")
    report = dm.data_report()
    assert len(report["duplicate_groups"]) == 2 and len(report["label_conflicts"]) == 1
    assert report["n_listed"] == 5 * 24 + 2 and report["n_usable"] == 5 * 24 - 1
    conflict_rows = [
        i for i, p in enumerate(dm.data.listing.ids) if p.endswith(("lymphocyte_0000.png", "filed_twice.png"))
    ]
    assert all(dm.subsets[i] == S.EXCLUDED for i in conflict_rows)


def test_split_is_restored_from_checkpoint_state_and_split_file(tmp_path: Path) -> None:
    dm = _dm(source=SyntheticSource(12))
    dm.setup("fit")
    state = dm.state_dict()
    dm.write_split(tmp_path)
    # A different seed would make a different split, but the saved one wins.
    other = _dm(source=SyntheticSource(12), split_seed=99)
    other.setup("test")
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.subsets, dm.subsets)
    from_file = _dm(source=SyntheticSource(12), split_seed=99, split_file=str(tmp_path / "split.csv"))
    from_file.setup("test")
    np.testing.assert_array_equal(from_file.subsets, dm.subsets)
    assert json.loads((tmp_path / "data_report.json").read_text())["n_usable"] == 60


def test_kfold_test_folds_cover_dataset() -> None:
    test_rows = []
    for fold in range(3):
        dm = _dm(source=SyntheticSource(9), n_folds=3, fold=fold)
        dm.setup("fit")
        test_rows.append(set(dm.rows_of("test").tolist()))
    assert set().union(*test_rows) == set(range(45)) and sum(map(len, test_rows)) == 45


def test_csv_manifest_source(tmp_path: Path, image_folder: Path) -> None:
    rows = ["path,label"]
    for p in sorted(image_folder.rglob("*.png")):
        rows.append(f"{p.relative_to(image_folder)},{p.parent.name}")
    rows.append("missing/file.png,monocyte")
    (image_folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    dm = _dm(root=str(image_folder / "manifest.csv"))
    dm.setup("fit")
    assert dm.class_names == ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert dm.data_report()["n_usable"] == 120
    assert any("file not found" in s["reason"] for s in dm.data_report()["skipped"])
    (image_folder / "manifest.csv").unlink()


def test_predict_folder_loader(tmp_path: Path, image_folder: Path) -> None:
    dm = _dm(predict_root=str(image_folder / "monocyte"))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)
    assert len(dm.predict_paths()) == 24


def test_disk_cache_mode_with_workers(image_folder: Path, tmp_path: Path) -> None:
    dm = _dm(root=str(image_folder), cache="disk", cache_dir=str(tmp_path), num_workers=2)
    dm.setup("fit")
    assert dm.data.cache_file is not None and Path(dm.data.cache_file).exists()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].dtype == torch.uint8


def test_bloodmnist_source_keeps_official_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 8).reshape(n, 1)
    np.savez_compressed(tmp_path / "bloodmnist.npz", **arrays)
    dm = _dm(root=str(tmp_path), labels_per_class=2)
    dm.setup("fit")
    assert dm.num_classes == 8 and dm.class_names[3] == "ig"
    assert len(dm.rows_of("test")) == 16 and len(dm.rows_of("val")) == 16
    assert len(dm.rows_of("train")) == 16 and len(dm.rows_of("unlabeled")) == 32
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)  # resized from 28 px to the training resolution


def test_center_crop_reaches_training_and_predict_images_and_the_hparams(image_folder: Path) -> None:
    from bloodcls.data.images import read_image, resize_square
    from bloodcls.errors import UserInputError

    dm = _dm(root=str(image_folder), center_crop=0.5, predict_root=str(image_folder / "monocyte"))
    dm.setup("fit")
    row = int(np.flatnonzero(dm.data.usable)[0])
    expected = resize_square(read_image(dm.data.listing.ids[row]), 32, 0.5)
    np.testing.assert_array_equal(np.asarray(dm.data.images[row]), expected)
    assert dm.hparams["center_crop"] == 0.5 and dm.data_report()["center_crop"] == 0.5  # travels with checkpoints
    dm.setup("predict")
    first = dm.predict_paths()[0]
    image = next(iter(dm.predict_dataloader()))["image"][0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(image, resize_square(read_image(first), 32, 0.5))
    for bad in (0.0, 1.5):
        with pytest.raises(UserInputError, match="center_crop"):
            _dm(root=str(image_folder), center_crop=bad)
