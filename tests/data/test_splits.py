"""Reference tests for the pure split functions (hand-computed expectations)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bloodcls.data import splits as S


def test_content_hash_is_sha256() -> None:
    assert S.content_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_deduplicate_keeps_first_of_each_group_and_drops_conflicts() -> None:
    hashes = ["a", "b", "a", "c", "b", "d", "a"]
    labels = [0, 1, 0, 2, 2, 1, 0]
    result = S.deduplicate(hashes, labels)
    # "a" x3 same label -> keep index 0; "b" has labels 1 and 2 -> conflict, both dropped.
    assert result.keep.tolist() == [0, 3, 5]
    assert result.groups == [[0, 2, 6], [1, 4]]
    assert result.conflicts == [[1, 4]]
    assert result.n_dropped == 2 + 2


def test_stratified_split_counts_per_class() -> None:
    labels = [0] * 20 + [1] * 10 + [2] * 4
    subsets = S.stratified_split(labels, val_fraction=0.2, test_fraction=0.1, seed=3)
    counts = {c: Counter(subsets[np.asarray(labels) == c]) for c in range(3)}
    assert counts[0] == {"train": 14, "val": 4, "test": 2}
    assert counts[1] == {"train": 7, "val": 2, "test": 1}
    # 4 images: round(0.4)=0 -> at least one held out for each non-zero fraction
    assert counts[2] == {"train": 2, "val": 1, "test": 1}


def test_stratified_split_is_deterministic_and_order_independent() -> None:
    labels = np.repeat([0, 1], 30)
    keys = [f"h{i:03d}" for i in range(60)]
    a = S.stratified_split(labels, 0.2, 0.2, seed=0, keys=keys)
    perm = np.random.default_rng(1).permutation(60)
    b = S.stratified_split(labels[perm], 0.2, 0.2, seed=0, keys=[keys[i] for i in perm])
    # Same key -> same subset, whatever order the files were listed in.
    assert {keys[i]: a[i] for i in range(60)} == {keys[perm[j]]: b[j] for j in range(60)}
    c = S.stratified_split(labels, 0.2, 0.2, seed=1, keys=keys)
    assert (a != c).any()


@pytest.mark.parametrize(("val", "test"), [(0.6, 0.5), (0.5, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_stratified_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        S.stratified_split([0, 1, 0, 1], val, test)


def test_kfold_folds_partition_each_class() -> None:
    labels = np.array([0] * 10 + [1] * 5)
    tests = [S.kfold_split(labels, n_folds=5, fold=f, val_fraction=0.2, seed=0) == S.TEST for f in range(5)]
    stacked = np.stack(tests)
    assert (stacked.sum(axis=0) == 1).all()  # every image is in exactly one test fold
    for mask in tests:
        assert Counter(labels[mask]) == {0: 2, 1: 1}  # stratified
    one = S.kfold_split(labels, n_folds=5, fold=0, val_fraction=0.2, seed=0)
    assert Counter(one[labels == 0]) == {"test": 2, "val": 2, "train": 6}


def test_kfold_validation_never_takes_a_class_last_training_image() -> None:
    rare = S.kfold_split([0] * 10 + [1] * 2, n_folds=2, fold=0, val_fraction=0.15, seed=0)[10:]
    assert sorted(rare) == sorted([S.TEST, S.TRAIN])  # one test image; the other trains instead of validating
    greedy = S.kfold_split([0] * 10 + [1] * 10, n_folds=2, fold=0, val_fraction=0.6, seed=0)
    for cls in (slice(0, 10), slice(10, 20)):
        assert list(greedy[cls]).count(S.TRAIN) >= 1


def test_kfold_rejects_class_smaller_than_folds() -> None:
    with pytest.raises(ValueError, match="class 'rare' has 3 images, fewer than n_folds=5"):
        S.kfold_split([0] * 10 + [1] * 3, n_folds=5, fold=0, class_names=["common", "rare"])
    with pytest.raises(ValueError, match="fold=5"):
        S.kfold_split([0] * 10, n_folds=5, fold=5)


def test_labeled_budget_per_class_and_fraction() -> None:
    labels = np.array([0] * 12 + [1] * 8)
    subsets = np.array(["train"] * 10 + ["test"] * 2 + ["train"] * 6 + ["val"] * 2, dtype=object)
    out = S.labeled_budget(labels, subsets, labels_per_class=3, seed=0)
    assert Counter(out[labels == 0]) == {"train": 3, "unlabeled": 7, "test": 2}
    assert Counter(out[labels == 1]) == {"train": 3, "unlabeled": 3, "val": 2}
    frac = S.labeled_budget(labels, subsets, labeled_fraction=0.5, seed=0)
    assert Counter(frac[labels == 0])["train"] == 5 and Counter(frac[labels == 1])["train"] == 3
    # Held-out subsets are never touched.
    assert (out[subsets != "train"] == subsets[subsets != "train"]).all()


def test_labeled_budget_larger_than_class_is_an_error() -> None:
    labels = np.array([0] * 12 + [1] * 4)
    subsets = np.array(["train"] * 16, dtype=object)
    with pytest.raises(ValueError, match="labels_per_class=5 is larger than class 'b', which has only 4"):
        S.labeled_budget(labels, subsets, labels_per_class=5, class_names=["a", "b"])
    with pytest.raises(ValueError, match="not both"):
        S.labeled_budget(labels, subsets, labels_per_class=1, labeled_fraction=0.5)


def test_labeled_budget_is_nested_across_seeds_and_deterministic() -> None:
    labels = np.repeat([0, 1], 50)
    subsets = np.array(["train"] * 100, dtype=object)
    a = S.labeled_budget(labels, subsets, labels_per_class=10, seed=4)
    b = S.labeled_budget(labels, subsets, labels_per_class=10, seed=4)
    assert (a == b).all()
    small = S.labeled_budget(labels, subsets, labels_per_class=5, seed=4)
    # Budgets grow by adding images: the 5-label set is inside the 10-label set (fair label-efficiency curves).
    assert set(np.flatnonzero(small == "train")) <= set(np.flatnonzero(a == "train"))


def test_split_csv_round_trip(tmp_path) -> None:
    path = S.write_split_csv(tmp_path / "split.csv", ["a.png", "b.png"], ["h1", "h2"], ["x", "y"], ["train", "test"])
    rows = S.read_split_csv(path)
    assert rows == [S.SplitRow("a.png", "h1", "x", "train"), S.SplitRow("b.png", "h2", "y", "test")]
    (tmp_path / "bad.csv").write_text("path,label\na,b\n")
    with pytest.raises(ValueError, match="expected header"):
        S.read_split_csv(tmp_path / "bad.csv")


def test_cap_subset_keeps_n_per_class_and_excludes_the_rest() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [0, 1])
    subsets = np.array(["val"] * 9 + ["train", "train"], dtype=object)
    out = S.cap_subset(labels, subsets, "val", per_class=2, seed=0)
    assert Counter(out[labels == 0]) == {"val": 2, "excluded": 4, "train": 1}
    assert Counter(out[labels == 1]) == {"val": 2, "excluded": 1, "train": 1}
