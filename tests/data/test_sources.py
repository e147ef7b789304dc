"""Data sources chosen by class_path: root auto-detection, data.root overrides, a new source as one class."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from bloodcls.data import BloodCellDataModule, CsvSource, FolderSource, MedMnistSource, SyntheticSource
from bloodcls.data.interface import EvaluationData, LoaderRequest, TrainingData
from bloodcls.data.sources import source_for_root
from bloodcls.errors import UserInputError


def _dm(**kwargs: object) -> BloodCellDataModule:
    defaults: dict[str, object] = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache": "memory"}
    return BloodCellDataModule(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_root_alone_picks_the_source(tmp_path: Path, image_folder: Path) -> None:
    assert source_for_root(None) == SyntheticSource()
    assert source_for_root(str(image_folder)) == FolderSource(str(image_folder))
    assert source_for_root(str(tmp_path / "m.csv")) == CsvSource(str(tmp_path / "m.csv"))
    (tmp_path / "bloodmnist_64.npz").write_bytes(b"")
    assert source_for_root(str(tmp_path)) == MedMnistSource(str(tmp_path))
    assert _dm(root=str(image_folder)).class_names[0] == "basophil"


def test_data_root_overrides_a_rooted_source_and_is_refused_by_synthetic(image_folder: Path) -> None:
    dm = _dm(root=str(image_folder), source=FolderSource("/does/not/exist"))
    assert dm.root == str(image_folder) and dm.source == FolderSource(str(image_folder))
    assert MedMnistSource("a", size=64).with_root("b") == MedMnistSource("b", size=64)  # other settings kept
    with pytest.raises(UserInputError, match="data.root=.*SyntheticSource reads no files"):
        _dm(root=str(image_folder), source=SyntheticSource(per_class=5))
    with pytest.raises(UserInputError, match="FolderSource needs a root"):
        _dm(source=FolderSource()).setup("fit")


def test_checkpoint_hparams_hold_the_source_as_plain_data() -> None:
    dm = _dm(source=SyntheticSource(per_class=7, seed=3))
    stored = dm.hparams["source"]
    assert stored == {
        "class_path": "bloodcls.data.sources.synthetic.SyntheticSource",
        "init_args": {"per_class": 7, "seed": 3},
    }
    again = BloodCellDataModule(**{k: v for k, v in dm.hparams.items()})  # what load_from_checkpoint does
    assert again.source == SyntheticSource(per_class=7, seed=3)


def test_datamodule_implements_the_data_protocols_and_serves_requested_views() -> None:
    dm = _dm(source=SyntheticSource(per_class=40), labels_per_class=2)
    assert isinstance(dm, TrainingData) and isinstance(dm, EvaluationData)
    dm.setup("fit")
    supervised = next(iter(dm.train_dataloader()))  # no request yet: plain supervised batches
    assert set(supervised) == {"image", "label", "index"}
    dm.request_loaders(
        LoaderRequest(
            labeled_views={"image": None},
            unlabeled_views={"image_weak": "weak", "image_strong": "strong"},
            unlabeled_ratio=3,
        )
    )
    batch, *_ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"labeled", "unlabeled"}
    assert {"image_weak", "image_strong", "true_label", "pool_index"} <= set(batch["unlabeled"])
    assert len(batch["unlabeled"]["pool_index"]) == 3 * len(batch["labeled"]["label"])
    assert dm.split_summary() == "train 10, unlabeled 130, val 30, test 30"


TOY_SOURCE = '''
"""A data source a user adds: one class, nothing else in bloodcls touched."""
import numpy as np

from bloodcls.data.sources import DataSource, SourceListing


class StripesSource(DataSource):
    def __init__(self, per_class: int = 10) -> None:
        self.per_class = per_class

    def class_names(self) -> list[str]:
        return ["dark", "light"]

    def listing(self, image_size: int) -> SourceListing:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(2), self.per_class)
        images = rng.integers(0, 100, (len(labels), image_size, image_size, 3)).astype(np.uint8)
        images[labels == 1] += 150
        ids = [f"stripes/{i}" for i in range(len(labels))]
        return SourceListing(class_names=self.class_names(), ids=ids, labels=labels.astype(np.int64), arrays=images)
'''


@pytest.mark.slow  # starts the console script (a torch + Lightning import: seconds)
def test_a_new_source_is_one_class_and_one_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy_source.py").write_text(TOY_SOURCE)
    config = tmp_path / "stripes.yaml"
    config.write_text(
        textwrap.dedent(
            """
            data:
              class_path: bloodcls.data.BloodCellDataModule
              init_args:
                source:
                  class_path: toy_source.StripesSource
                  init_args:
                    per_class: 12
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).resolve().parents[2]}")
    result = run_cli(
        "fit",
        *("--config", "configs/quickstart.yaml", "--config", str(config)),
        *("--model.init_args.backbone", "bloodcls_cnn_tiny", "--data.init_args.image_size", "16"),
        *("--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8", "--trainer.max_epochs", "1"),
        *("--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")),
        *("--trainer.default_root_dir", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoints = list((tmp_path / "runs").rglob("best.ckpt"))
    assert len(checkpoints) == 1
    import torch

    hparams = torch.load(checkpoints[0], weights_only=True)["datamodule_hyper_parameters"]
    assert hparams["source"]["class_path"] == "toy_source.StripesSource"
    assert hparams["source"]["init_args"]["per_class"] == 12
