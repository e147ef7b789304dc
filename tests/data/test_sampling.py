"""Class weights, weighted and balanced samplers, SMOTE."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bloodcls.data.sampling import (
    BalancedClassSampler,
    class_counts,
    class_weights,
    sample_weights,
    smote_oversample,
    weighted_sampler,
)


def test_class_weights_inverse_by_hand() -> None:
    counts = np.array([30, 10, 0])
    w = class_weights(counts, "inverse")
    # raw 1/30, 1/10, 0; mean over images = (30/30 + 10/10)/40 = 0.05 -> divide
    np.testing.assert_allclose(w, [1 / 30 / 0.05, 1 / 10 / 0.05, 0.0])
    np.testing.assert_allclose((w * counts).sum() / counts.sum(), 1.0)
    np.testing.assert_allclose(class_weights(counts, "none"), [1.0, 1.0, 0.0])
    s = class_weights(counts, "sqrt_inverse")
    assert s[1] / s[0] == pytest.approx(np.sqrt(3))
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights(counts, "bogus")  # type: ignore[arg-type]


def test_sample_weights_equalise_expected_class_mass() -> None:
    labels = np.array([0] * 9 + [1] * 3)
    w = sample_weights(labels, 2)
    assert w[labels == 0].sum() == pytest.approx(w[labels == 1].sum())
    assert class_counts(labels, 3).tolist() == [9, 3, 0]


def test_weighted_sampler_draws_classes_evenly() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    drawn = labels[list(weighted_sampler(labels, 2, seed=0))]
    share = (drawn == 1).mean()
    assert 0.45 < share < 0.55


def test_balanced_sampler_makes_every_batch_balanced() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 4)
    sampler = BalancedClassSampler(labels, seed=0)
    order = list(sampler)
    assert len(order) == len(labels)
    for start in range(0, 60, 6):  # full batches of 6 = 2 rounds of the 3 classes
        batch = Counter(labels[order[start : start + 6]].tolist())
        assert batch == {0: 2, 1: 2, 2: 2}
    # Minority images are cycled through without replacement before repeating.
    first_round_of_class_2 = [i for i in order if labels[i] == 2][:4]
    assert sorted(first_round_of_class_2) == [60, 61, 62, 63]
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_smote_balances_classes_with_in_range_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(26, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0] * 20 + [1] * 6)
    new_images, new_labels = smote_oversample(images, labels, seed=0)
    assert new_images.shape == (14, 8, 8, 3) and new_images.dtype == np.uint8
    assert new_labels.tolist() == [1] * 14
    # SMOTE interpolates between minority samples: every pixel lies within the minority range.
    minority = images[labels == 1]
    assert (new_images >= minority.min(axis=0)).all() and (new_images <= minority.max(axis=0)).all()


def test_smote_noop_when_balanced() -> None:
    images = np.zeros((4, 4, 4, 3), np.uint8)
    out, lab = smote_oversample(images, np.array([0, 0, 1, 1]))
    assert len(out) == 0 and len(lab) == 0
