"""Tests for bloodcls.data.medmnist_source on tiny generated files in medmnist's npz layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bloodcls.data.medmnist_source import BLOODMNIST_SIZES, ArrayDataset, load_bloodmnist

CLASS_NAMES = [
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
]


def write_npz(path: Path, size: int = 28, counts: tuple[int, int, int] = (6, 2, 3), gray: bool = False) -> None:
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        shape = (n, size, size) if gray else (n, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 8).reshape(n, 1)  # medmnist stores (N, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def test_sizes_match_medmnist() -> None:
    import medmnist

    assert tuple(medmnist.BloodMNIST.available_sizes) == BLOODMNIST_SIZES


def test_load_rgb_28(tmp_path: Path) -> None:
    write_npz(tmp_path / "bloodmnist.npz")
    ds = load_bloodmnist(tmp_path)
    assert isinstance(ds, ArrayDataset)
    assert ds.images.shape == (11, 28, 28, 3) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 0, 1, 2]
    assert ds.labels.dtype == np.int64
    assert ds.class_names == CLASS_NAMES
    assert ds.official_split.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    assert ds.ids[:2] == ["bloodmnist_28/train/0", "bloodmnist_28/train/1"]
    assert ds.ids[6] == "bloodmnist_28/val/0" and ds.ids[8] == "bloodmnist_28/test/0"
    assert len(set(ds.ids)) == len(ds) == 11


def test_load_sized_file_name(tmp_path: Path) -> None:
    write_npz(tmp_path / "bloodmnist_64.npz", size=64, counts=(2, 1, 1))
    ds = load_bloodmnist(tmp_path, size=64)
    assert ds.images.shape == (4, 64, 64, 3)
    assert ds.ids[0] == "bloodmnist_64/train/0"


def test_grayscale_is_converted_to_rgb(tmp_path: Path) -> None:
    write_npz(tmp_path / "bloodmnist.npz", gray=True)
    ds = load_bloodmnist(tmp_path)
    assert ds.images.shape == (11, 28, 28, 3)
    assert np.array_equal(ds.images[..., 0], ds.images[..., 2])


def test_missing_file_names_file_and_command(tmp_path: Path) -> None:
    write_npz(tmp_path / "bloodmnist.npz")  # a 28 px file does not satisfy a 128 px request
    with pytest.raises(FileNotFoundError) as excinfo:
        load_bloodmnist(tmp_path, size=128)
    message = str(excinfo.value)
    assert str(tmp_path / "bloodmnist_128.npz") in message
    assert f"bloodcls download bloodmnist --dest {tmp_path} --size 128" in message
    assert "\n" not in message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="bloodmnist.npz not found; fetch it with `bloodcls download"):
        load_bloodmnist(tmp_path / "nowhere")


def test_unsupported_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported size 100; expected one of 28, 64, 128, 224"):
        load_bloodmnist(tmp_path, size=100)


def test_missing_array_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bloodmnist.npz"
    np.savez(path, train_images=np.zeros((1, 28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="bloodmnist.npz: missing array .*train_labels"):
        load_bloodmnist(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bloodmnist.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bloodmnist.npz: unreadable .*re-run `bloodcls download bloodmnist"):
        load_bloodmnist(tmp_path)
