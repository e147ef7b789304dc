"""ImageArrayDataset: augmentations follow torch's seed (reproducible runs, distinct streams per worker)."""

from __future__ import annotations

import numpy as np
import torch

from bloodcls.data.datasets import ImageArrayDataset
from bloodcls.data.synthetic import generate_dataset
from bloodcls.data.transforms import build_transform


def _dataset() -> ImageArrayDataset:
    images, labels = generate_dataset(2, size=32, seed=0)
    views = {"image_weak": build_transform("weak", 32), "image_strong": build_transform("strong", 32)}
    return ImageArrayDataset(images, labels, np.arange(len(labels)), views)


def _draws(dataset: ImageArrayDataset, n: int = 6) -> list[torch.Tensor]:
    return [
        torch.cat([dataset[i % len(dataset)]["image_weak"], dataset[i % len(dataset)]["image_strong"]])
        for i in range(n)
    ]


def test_augmentations_are_reproducible_under_the_same_torch_seed() -> None:
    torch.manual_seed(123)
    first = _draws(_dataset())
    torch.manual_seed(123)
    second = _draws(_dataset())
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_a_different_torch_seed_gives_different_augmentations() -> None:
    torch.manual_seed(1)
    first = _draws(_dataset())
    torch.manual_seed(2)
    second = _draws(_dataset())
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_weak_and_strong_views_draw_from_distinct_streams() -> None:
    torch.manual_seed(0)
    dataset = _dataset()
    dataset.views["image_strong"] = build_transform("weak", 32)  # same pipeline under two keys
    item = dataset[0]
    pairs = [(dataset[i]["image_weak"], dataset[i]["image_strong"]) for i in range(len(dataset))]
    assert item["image_weak"].shape == (3, 32, 32)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_two_datasets_in_one_process_draw_distinct_augmentations() -> None:
    # Self-training's labeled and pseudo-labeled loaders: same view name, same process seed, the same image at the
    # k-th position must not get the same flip / rotation in both.
    images, labels = generate_dataset(2, size=32, seed=0)
    image = np.repeat(images[:1], 8, axis=0)  # one image everywhere: differences come from augmentation only
    torch.manual_seed(0)
    labeled = ImageArrayDataset(image, labels[:8], np.arange(8), {"image": build_transform("weak", 32)})
    pool = ImageArrayDataset(
        image, labels[:8], np.arange(100, 108), {"image": build_transform("weak", 32)}, label_key="true_label"
    )
    same = [torch.equal(labeled[k]["image"], pool[k]["image"]) for k in range(8)]
    assert not all(same)
    salted = ImageArrayDataset(image, labels[:8], np.arange(8), {"image": build_transform("weak", 32)}, seed_salt=7)
    assert salted.seed_salt == 7
