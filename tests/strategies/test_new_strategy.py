"""A new strategy is one file plus one config: the toy strategy registers itself and trains through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bloodcls.cli import main
from bloodcls.strategies import registered_strategies


@pytest.mark.filterwarnings("ignore")
def test_toy_strategy_from_one_file_and_one_config_trains_through_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "median_mask.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"class_path": "toy_strategy.MedianMaskMatch", "init_args": {"mu": 1}},
                "data": {"init_args": {"labels_per_class": 4}},
            }
        )
    )
    runs = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--config",
            str(config),
            "--data.source.per_class=12",
            "--data.init_args.num_workers=0",
            "--data.init_args.image_size=32",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={runs}",
        ]
    )
    assert "toy_strategy.MedianMaskMatch" in registered_strategies()
    metrics = (runs / "quickstart" / "version_0" / "metrics.csv").read_text()
    assert "train/mask_ratio" in metrics and "train/loss_unsup" in metrics
