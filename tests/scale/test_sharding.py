"""Pure pieces of DDP support: sharded samplers, shard merging, BN buffer averaging (no processes started)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloodcls.data.sampling import (
    BalancedClassSampler,
    DrawWithReplacement,
    eval_sampler,
    weighted_sampler,
)
from bloodcls.strategies.mean_teacher import average_float_buffers
from bloodcls.strategies.relabeling import merge_shards

LABELS = np.array([0] * 7 + [1] * 3 + [2] * 2)


def _shards(make: type | object, world: int, epoch: int = 0, **kwargs: object) -> list[list[int]]:
    out = []
    for rank in range(world):
        sampler = make(**kwargs, rank=rank, world_size=world)  # type: ignore[operator]
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def test_balanced_shards_are_whole_rounds_of_one_draw() -> None:
    single = BalancedClassSampler(LABELS, num_samples=24, seed=3)
    rounds = [list(single)[i : i + 3] for i in range(0, 24, 3)]  # 3 classes: 8 rounds of 3
    shards = _shards(BalancedClassSampler, 2, labels=LABELS, num_samples=12, seed=3)
    assert shards[0] == [i for r in rounds[0::2] for i in r]  # round j goes to rank j mod 2
    assert shards[1] == [i for r in rounds[1::2] for i in r]
    for shard in shards:  # every rank's batches stay class balanced
        for start in range(0, 12, 3):
            assert sorted(LABELS[shard[start : start + 3]].tolist()) == [0, 1, 2]
    # Default epoch length: len(labels) in all, split over the ranks.
    assert len(BalancedClassSampler(LABELS, rank=1, world_size=5)) == 3


def test_balanced_shards_change_with_the_epoch_and_agree_on_length() -> None:
    e0 = _shards(BalancedClassSampler, 3, epoch=0, labels=LABELS, num_samples=6, seed=0)
    e1 = _shards(BalancedClassSampler, 3, epoch=1, labels=LABELS, num_samples=6, seed=0)
    assert [len(s) for s in e0] == [6, 6, 6]
    assert e0 != e1


def test_draw_with_replacement_interleaves_one_draw() -> None:
    single = list(DrawWithReplacement(10, 12, seed=5))
    shards = _shards(DrawWithReplacement, 3, n=10, num_samples=4, seed=5)
    assert [len(s) for s in shards] == [4, 4, 4]
    assert shards == [single[r::3] for r in range(3)]
    sampler = DrawWithReplacement(10, 12, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != single


def test_weighted_sampler_follows_the_weights_and_splits_the_epoch() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    shards = _shards(weighted_sampler, 2, labels=labels, num_classes=2, seed=0)
    assert [len(s) for s in shards] == [500, 500]
    share = (labels[shards[0] + shards[1]] == 1).mean()
    assert 0.45 < share < 0.55


def test_eval_shards_cover_every_image_once() -> None:
    samplers = [eval_sampler(7, rank, 3) for rank in range(3)]
    assert all(s is not None for s in samplers)
    shards = [list(s) for s in samplers if s is not None]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]
    assert eval_sampler(2, 0, 3) is None and eval_sampler(7, 0, 1) is None  # tiny set / one process: Lightning's
    with pytest.raises(ValueError, match="rank 3"):
        eval_sampler(7, 3, 3)


def test_merge_shards_restores_pool_order_and_refuses_gaps() -> None:
    def arrays(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pos[:, None] * np.ones((1, 2)), pos[:, None] * np.ones((1, 3)), pos * 10

    parts = [(np.array([0, 2, 4]), arrays(np.array([0, 2, 4]))), (np.array([1, 3]), arrays(np.array([1, 3])))]
    probs, emb, labels = merge_shards(parts, 5)
    assert labels.tolist() == [0, 10, 20, 30, 40]
    assert probs[:, 0].tolist() == [0, 1, 2, 3, 4] and emb.shape == (5, 3)
    assert merge_shards([*parts, (np.zeros(0, np.int64), None)], 5)[2].tolist() == labels.tolist()  # empty rank
    with pytest.raises(RuntimeError, match="cover 5 of 6"):
        merge_shards(parts, 6)


class _MeanOfTwoRanks:
    """A stand-in strategy: ``reduce`` averages the tensor with a second rank whose buffers are all 1."""

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        assert reduce_op == "mean"
        return (tensor + 1.0) / 2


def test_average_float_buffers_maps_the_flat_reduce_back() -> None:
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(2))
    net[0].running_mean.copy_(torch.tensor([1.0, 3.0, 5.0]))
    net[1].running_var.copy_(torch.tensor([7.0, 9.0]))
    net[0].num_batches_tracked.fill_(4)
    average_float_buffers(net, _MeanOfTwoRanks())  # type: ignore[arg-type]
    assert net[0].running_mean.tolist() == [1.0, 2.0, 3.0]
    assert net[0].running_var.tolist() == [1.0, 1.0, 1.0]  # (1 + 1) / 2
    assert net[1].running_var.tolist() == [4.0, 5.0]
    assert int(net[0].num_batches_tracked) == 4  # integer counters are left alone
    assert net[0].running_mean.dtype == torch.float32 and net[0].num_batches_tracked.dtype == torch.long
