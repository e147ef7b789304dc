"""The test report on Weights & Biases: per-class table, confusion matrix (interactive and as the report's image),
ROC / calibration plots, the report's scalar metrics and its files -- only when the trainer has a WandbLogger."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger

from bloodcls.evaluation.report import PER_CLASS_FIELDS

REPORT_FILES = (
    "metrics.json",
    "per_class.csv",
    "test_predictions.csv",
    "confusion_matrix.png",
    "roc.png",
    "calibration.png",
)
REPORT_PLOTS = {"confusion_matrix": "confusion_matrix.png", "roc": "roc.png", "calibration": "calibration.png"}
# Scalars of metrics.json that Lightning's test/* metrics do not already carry, under their W&B names.
REPORT_SCALARS = {"auroc": "test/macro_auroc", "nll": "test/nll", "ece": "test/ece", "n": "test/n_images"}


def wandb_loggers(loggers: Iterable[Logger]) -> list[WandbLogger]:
    """The trainer's W&B loggers (ours subclass Lightning's)."""
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def per_class_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """metrics.json's per-class entries as table rows in ``PER_CLASS_FIELDS`` order (undefined AUROC: None)."""
    return [[row[key] for key in PER_CLASS_FIELDS] for row in metrics["per_class"]]


def log_test_report(
    loggers: Iterable[Logger],
    out_dir: Path,
    metrics: dict[str, Any],
    targets: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str],
) -> None:
    """Log a written test report (``out_dir``) to every W&B logger; rank 0 only, like the report itself."""
    targets_loggers = wandb_loggers(loggers)
    if not targets_loggers:
        return
    import wandb  # only now: a run without a WandbLogger never imports wandb

    payload: dict[str, Any] = {
        "test/per_class": wandb.Table(columns=list(PER_CLASS_FIELDS), data=per_class_rows(metrics)),
        "test/confusion_matrix": wandb.plot.confusion_matrix(
            y_true=targets.tolist(), preds=preds.tolist(), class_names=list(class_names)
        ),
    }
    for key, file in REPORT_PLOTS.items():
        if (out_dir / file).is_file():
            payload[f"test/plots/{key}"] = wandb.Image(str(out_dir / file))
    scalars = {name: metrics[key] for key, name in REPORT_SCALARS.items() if metrics.get(key) is not None}
    for logger in targets_loggers:
        run = logger.experiment
        run.log({**payload, **scalars})
        run.summary.update(scalars)
        # Files keep their place in the run directory (test/metrics.json, ...); offline runs upload on `wandb sync`.
        for file in REPORT_FILES:
            if (out_dir / file).is_file():
                run.save(str(out_dir / file), base_path=str(out_dir.parent), policy="now")
