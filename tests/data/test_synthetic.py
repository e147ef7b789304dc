"""The embedded synthetic smear generator: shapes, determinism, stability, distinctness, files, learnability."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bloodcls.data.synthetic import SYNTHETIC_CLASSES, generate_dataset, render_cell, write_image_folder


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray]:
    return generate_dataset(6, size=48, seed=3)


def test_class_names_and_order() -> None:
    assert SYNTHETIC_CLASSES == ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


def test_shapes_dtypes_and_sorted_labels(small: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = small
    assert images.shape == (30, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert labels.tolist() == [c for c in range(5) for _ in range(6)]
    # Real-looking crops: a bright background and dark stained structures, not a flat or saturated image.
    assert images.max() > 200 and images.min() < 120


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_render_cell_sizes(size: int) -> None:
    for label in range(len(SYNTHETIC_CLASSES)):
        img = render_cell(label, np.random.default_rng([0, label, 0]), size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8


def test_same_seed_is_byte_identical(small: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = generate_dataset(6, size=48, seed=3)
    assert images.tobytes() == small[0].tobytes() and np.array_equal(labels, small[1])


def test_other_seed_differs(small: tuple[np.ndarray, np.ndarray]) -> None:
    other, _ = generate_dataset(6, size=48, seed=4)
    assert not any(np.array_equal(a, b) for a, b in zip(other, small[0], strict=True))


def test_each_image_depends_only_on_seed_label_index(small: tuple[np.ndarray, np.ndarray]) -> None:
    # A larger dataset keeps the smaller one as a per-class prefix, so subsets are stable as n grows.
    big, big_labels = generate_dataset(9, size=48, seed=3)
    for c in range(5):
        assert np.array_equal(big[big_labels == c][:6], small[0][small[1] == c])
    direct = render_cell(2, np.random.default_rng([3, 2, 4]), 48)
    assert np.array_equal(direct, small[0][2 * 6 + 4])


def test_images_are_distinct() -> None:
    images, _ = generate_dataset(40, size=32, seed=0)
    hashes = {hashlib.sha1(img.tobytes()).hexdigest() for img in images}
    assert len(hashes) == len(images)


def test_empty_dataset() -> None:
    images, labels = generate_dataset(0, size=32)
    assert images.shape == (0, 32, 32, 3) and labels.shape == (0,)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: render_cell(5, np.random.default_rng(0)), "label"),
        (lambda: render_cell(-1, np.random.default_rng(0)), "label"),
        (lambda: render_cell(0, np.random.default_rng(0), size=8), "size"),
        (lambda: generate_dataset(-1), "n_per_class"),
        (lambda: generate_dataset(2, seed=-1), "seed"),
        (lambda: write_image_folder("/nonexistent-never-written", 1, ext="gif"), "ext"),
    ],
)
def test_bad_arguments_name_the_problem(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_write_image_folder_round_trip(tmp_path: Path, ext: str) -> None:
    paths = write_image_folder(tmp_path, n_per_class=3, size=40, seed=2, ext=ext)
    images, labels = generate_dataset(3, size=40, seed=2)
    assert len(paths) == 15
    assert sorted(p.name for p in (tmp_path / "monocyte").iterdir()) == [f"monocyte_{i:04d}.{ext}" for i in range(3)]
    for path, image, label in zip(paths, images, labels, strict=True):
        assert path.parent == tmp_path / SYNTHETIC_CLASSES[int(label)] and path.suffix == f".{ext}"
        with Image.open(path) as f:
            decoded = np.asarray(f.convert("RGB"))
        if ext == "png":
            assert np.array_equal(decoded, image)  # lossless
        else:
            assert decoded.shape == image.shape
            # JPEG smooths the sensor noise away (~3-5 levels); a different image would be ~20 off.
            assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 8.0


def _mean_colour(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1, 3).mean(axis=1)


def test_mean_colour_alone_does_not_solve_the_task() -> None:
    # Stain jitter and the red-cell background must keep a colour-only shortcut well short of perfect.
    x_tr, y_tr = generate_dataset(60, size=32, seed=0)
    x_te, y_te = generate_dataset(40, size=32, seed=1)
    f_tr, f_te = _mean_colour(x_tr), _mean_colour(x_te)
    centroids = np.stack([f_tr[y_tr == c].mean(axis=0) for c in range(5)])
    pred = np.argmin(((f_te[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y_te).mean() < 0.95


@pytest.mark.slow  # an 8-epoch fit
def test_a_tiny_cnn_learns_it() -> None:
    x_tr, y_tr = generate_dataset(100, size=32, seed=0)
    x_te, y_te = generate_dataset(40, size=32, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread is fastest and is not slowed by a busy machine
    try:
        torch.manual_seed(0)

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        net = nn.Sequential(
            *block(3, 16), *block(16, 32), *block(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)
        )
        x = torch.from_numpy(x_tr).permute(0, 3, 1, 2).float() / 255 - 0.5  # (B, 3, 32, 32)
        y = torch.from_numpy(y_tr)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(8):
            net.train()
            for idx in torch.randperm(len(x), generator=gen).split(25):
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            pred = net(torch.from_numpy(x_te).permute(0, 3, 1, 2).float() / 255 - 0.5).argmax(1).numpy()
    finally:
        torch.set_num_threads(threads)
    assert (pred == y_te).mean() > 0.7  # chance is 0.2
