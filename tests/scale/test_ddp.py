"""DDP on CPU (gloo, 2 processes) through the real CLI: every strategy sees the right images on each rank.

Lightning's ``ddp`` strategy re-runs the launching command for rank 1, so each run is a ``bloodcls fit``
subprocess; ``ddp_probe.DumpBatches`` writes what every rank saw to JSON lines that the tests compare.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from scale_helpers import read_jsonl, run_bloodcls, tiny_fit_args

from bloodcls.data import BloodCellDataModule
from bloodcls.data.sampling import BalancedClassSampler, DrawWithReplacement
from bloodcls.strategies import MeanTeacher

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="this torch build has no gloo backend for CPU DDP",
    ),
]

QUICKSTART = REPO / "configs" / "quickstart.yaml"
WORLD = 2
DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", str(WORLD)]
DDP += ["--trainer.num_sanity_val_steps", "0"]
# 5 classes x 20 synthetic images, 20 % val / 20 % test: 12 training images per class, 4 labeled + 8 unlabeled.
DATA = [
    "--data.source.per_class",
    "20",
    "--data.init_args.val_fraction",
    "0.2",
    "--data.init_args.test_fraction",
    "0.2",
    "--data.init_args.labels_per_class",
    "4",
]


class Run:
    """A finished DDP fit: its run directory, split and what each rank recorded."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "runs" / "quickstart" / "version_0"
        with (self.dir / "split.csv").open() as fh:
            self.split = list(csv.DictReader(fh))
        self.class_names = json.loads((self.dir / "data_report.json").read_text())["class_names"]
        self.ranks = [read_jsonl(root / "probe" / f"rank{r}.jsonl") for r in range(WORLD)]

    def rows(self, subset: str) -> list[int]:
        """Listing rows of a subset, in the order the datamodule's datasets hold them."""
        return [i for i, row in enumerate(self.split) if row["subset"] == subset]

    def labels(self, rows: list[int]) -> np.ndarray:
        return np.array([self.class_names.index(self.split[i]["label"]) for i in rows])

    def batches(self, rank: int, epoch: int) -> list[dict]:
        return [r for r in self.ranks[rank] if r["kind"] == "batch" and r["epoch"] == epoch]

    def seen(self, rank: int, epoch: int, key: str) -> list[int]:
        return [i for b in self.batches(rank, epoch) for i in b[key]]

    def epoch_record(self, rank: int, epoch: int) -> dict:
        return next(r for r in self.ranks[rank] if r["kind"] == "epoch" and r["epoch"] == epoch)


def fit_ddp(tmp_path: Path, *extra: str, fragments: tuple[str, ...] = ()) -> Run:
    args = [*tiny_fit_args(QUICKSTART, *fragments), *DDP, *DATA, *extra]
    args += ["--trainer.callbacks+=ddp_probe.DumpBatches", "--trainer.callbacks.out_dir", str(tmp_path / "probe")]
    result = run_bloodcls(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    return Run(tmp_path)


@pytest.fixture(scope="module")
def mean_teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Mean Teacher with plain shuffled loaders (Lightning's DistributedSampler) and an odd validation set."""
    return fit_ddp(
        tmp_path_factory.mktemp("ddp_mean_teacher"),
        "--data.init_args.sampler",
        "none",
        "--data.init_args.steps_per_epoch",
        "null",
        "--data.init_args.val_per_class",
        "3",  # 15 validation images: shards of 8 and 7, where a padding sampler would count one twice
        "--data.init_args.batch_size",
        "5",
        "--data.init_args.unlabeled_batch_size",
        "10",
        "--trainer.max_epochs",
        "2",
        fragments=("configs/strategies/mean_teacher.yaml",),
    )


def test_plain_shuffle_shows_every_image_once_per_epoch(mean_teacher_run: Run) -> None:
    run = mean_teacher_run
    labeled, pool_size = run.rows("train"), len(run.rows("unlabeled"))
    # The sizes are chosen so that no padding or dropped last batch is involved: then "once" is exact.
    assert len(labeled) % (WORLD * 5) == 0 and pool_size % (WORLD * 10) == 0
    orders = []
    for epoch in range(2):
        seen = [run.seen(rank, epoch, "labeled") for rank in range(WORLD)]
        assert len(seen[0]) == len(seen[1]) == len(labeled) // WORLD  # equal shards
        assert sorted(seen[0] + seen[1]) == labeled  # each labeled image exactly once across the ranks
        pool = [run.seen(rank, epoch, "unlabeled_pool_index") for rank in range(WORLD)]
        assert len(pool[0]) == len(pool[1])
        assert sorted(pool[0] + pool[1]) == list(range(pool_size))  # the unlabeled loader is sharded too
        orders.append(seen[0])
    assert orders[0] != orders[1]  # set_epoch reaches the sampler: a new order each epoch


def test_mean_teacher_is_identical_on_every_rank(mean_teacher_run: Run) -> None:
    hashes = [[(r["step"], r["hash"]) for r in rank if r["kind"] == "teacher"] for rank in mean_teacher_run.ranks]
    assert len(hashes[0]) >= 4 and hashes[0] == hashes[1]  # bit for bit after every step
    assert len({h for _, h in hashes[0]}) == len(hashes[0])  # and it does move
    # (The student's own BN statistics are rank-local between steps -- DDP re-broadcasts rank 0's buffers at the
    # next forward -- and the teacher no longer copies them: its statistics are its own, averaged over ranks.)


def test_ddp_validation_metrics_equal_a_single_process_evaluation(mean_teacher_run: Run) -> None:
    """15 validation images on 2 ranks: synced metrics must count each image once (no padding repeats)."""
    run = mean_teacher_run
    ckpt = run.dir / "checkpoints" / "best.ckpt"
    epoch = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]  # saved right after its validation
    data_args = yaml.safe_load((run.dir / "config.yaml").read_text())["data"]["init_args"]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=run.dir / "single",
    )
    model = MeanTeacher.load_from_checkpoint(ckpt, map_location="cpu")
    [single] = trainer.validate(model, datamodule=BloodCellDataModule(**data_args), ckpt_path=str(ckpt), verbose=False)

    with (run.dir / "metrics.csv").open() as fh:
        ddp = next(r for r in csv.DictReader(fh) if r.get("val/acc") and int(r["epoch"]) == epoch)
    for key in ("val/acc", "val/balanced_acc", "val/macro_f1"):
        assert float(ddp[key]) == pytest.approx(single[key], abs=1e-7), key  # counts synced over both shards
    assert float(ddp["val/loss"]) == pytest.approx(single["val/loss"], rel=1e-5)


def test_ddp_test_report_covers_the_test_split_once(mean_teacher_run: Run) -> None:
    """``bloodcls test`` on 2 ranks: shards gathered, one report written by rank 0, every test image once."""
    run = mean_teacher_run
    ckpt = run.dir / "checkpoints" / "best.ckpt"
    result = run_bloodcls("test", "--ckpt_path", str(ckpt), *DDP, cwd=run.dir.parent.parent.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((run.dir / "test" / "metrics.json").read_text())
    test_paths = sorted(row["path"] for row in run.split if row["subset"] == "test")
    with (run.dir / "test" / "test_predictions.csv").open() as fh:
        assert sorted(row["path"] for row in csv.DictReader(fh)) == test_paths
    assert report["n"] == len(test_paths)
    with (run.dir / "test" / "metrics.csv").open() as fh:
        logged = next(row for row in csv.DictReader(fh) if row.get("test/acc"))
    assert float(logged["test/acc"]) == pytest.approx(report["acc"], abs=1e-6)  # synced metric = full report


def test_balanced_and_unlabeled_draws_are_disjoint_shares_of_one_draw(tmp_path: Path) -> None:
    """PseudoLabel with the balanced sampler and steps_per_epoch: both loaders draw with replacement; each rank
    gets its share of one seeded draw per epoch, equal in length, balanced, and new every epoch."""
    steps, batch = 3, 10
    run = fit_ddp(
        tmp_path,
        "--data.init_args.steps_per_epoch",
        str(steps),
        "--data.init_args.batch_size",
        str(batch),
        "--trainer.max_epochs",
        "2",
        fragments=("configs/strategies/pseudo_label.yaml",),
    )
    labeled_rows = run.rows("train")
    labels = run.labels(labeled_rows)
    pool_size = len(run.rows("unlabeled"))
    for epoch in range(2):
        for rank in range(WORLD):
            assert len(run.batches(rank, epoch)) == steps  # steps_per_epoch is per rank
            expected = BalancedClassSampler(labels, num_samples=steps * batch, seed=0, rank=rank, world_size=WORLD)
            expected.set_epoch(epoch)
            assert run.seen(rank, epoch, "labeled") == [labeled_rows[i] for i in expected]
            for b in run.batches(rank, epoch):  # 2 rounds of the 5 classes per batch
                counts = Counter(labels[labeled_rows.index(i)] for i in b["labeled"])
                assert sorted(counts.values()) == [2] * 5
            draw = DrawWithReplacement(pool_size, steps * batch, seed=0, rank=rank, world_size=WORLD)
            draw.set_epoch(epoch)
            assert run.seen(rank, epoch, "unlabeled_pool_index") == list(draw)
        # One draw cycling through each class without replacement: 12 draws per class of 4 images -> 3 each.
        both = Counter(run.seen(0, epoch, "labeled") + run.seen(1, epoch, "labeled"))
        assert set(both) == set(labeled_rows) and set(both.values()) == {3}
    assert run.seen(0, 0, "labeled") != run.seen(0, 1, "labeled")


def test_self_training_ranks_hold_identical_pseudo_labels(tmp_path: Path) -> None:
    """One relabeling round (model + label propagation over the whole pool); confidence 0 accepts everything,
    so the pseudo-labels must cover every pool position -- the pool was inferred once, across both ranks."""
    run = fit_ddp(
        tmp_path,
        "--model.init_args.epochs_per_round",
        "1",
        "--model.init_args.max_rounds",
        "1",
        "--model.init_args.patience",
        "5",
        "--model.init_args.confidence_threshold",
        "0.0",
        "--model.init_args.entropy_threshold",
        "1.0",
        "--model.init_args.lp_k",
        "5",
        "--data.init_args.batch_size",
        "10",
        "--data.init_args.steps_per_epoch",
        "2",
        "--trainer.max_epochs",
        "2",
        fragments=("configs/strategies/self_training.yaml",),
    )
    records = [run.epoch_record(rank, 1) for rank in range(WORLD)]
    pool_rows = run.rows("unlabeled")
    assert "pseudo_positions" not in run.epoch_record(0, 0)  # round 0 trains on labels only
    assert records[0]["pseudo_positions"] == records[1]["pseudo_positions"] == list(range(len(pool_rows)))
    assert records[0]["pseudo_labels"] == records[1]["pseudo_labels"]
    assert set(records[0]["pseudo_labels"]) <= set(range(len(run.class_names)))
    # The pseudo-labeled part of each batch (labeled_ratio 0.5: 10 on top of the 10 labeled images, 2 steps) is a
    # per-rank share of one balanced draw over pseudo-label classes.
    pseudo_labels = np.array(records[0]["pseudo_labels"])
    for rank in range(WORLD):
        expected = BalancedClassSampler(pseudo_labels, num_samples=2 * 10, seed=0, rank=rank, world_size=WORLD)
        expected.set_epoch(1)
        assert run.seen(rank, 1, "unlabeled_index") == [pool_rows[i] for i in expected]


def test_contrastive_pretraining_runs_under_plain_ddp(tmp_path: Path) -> None:
    """The classifier head takes no part in contrastive pretraining; plain ``ddp`` (no find_unused_parameters)
    must still run, and the linear probe must score the whole validation set (gathered from both ranks)."""
    run = fit_ddp(
        tmp_path,
        "--data.init_args.val_per_class",
        "3",  # 15 validation images, 8 + 7 on the two ranks
        "--data.init_args.steps_per_epoch",
        "2",
        "--data.init_args.batch_size",
        "10",
        "--trainer.max_epochs",
        "1",
        fragments=("configs/strategies/contrastive.yaml",),
    )
    with (run.dir / "metrics.csv").open() as fh:
        [row] = [r for r in csv.DictReader(fh) if r.get("val/acc")]
    correct = float(row["val/acc"]) * 15
    assert abs(correct - round(correct)) < 1e-4  # a fraction of all 15 images, not of one rank's 8 or 7
