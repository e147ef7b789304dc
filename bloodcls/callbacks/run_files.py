"""The run's data record: ``split.csv`` and ``data_report.json`` written next to a fit run, once, by rank 0."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.data.interface import evaluation_data
from bloodcls.distributed import run_dir

EXCLUDED_SUBSET = "excluded"  # rows a labels-per-class budget left out: not part of any subset the run uses


def split_summary(subset_counts: dict[str, list[int]]) -> str:
    """``train 70, val 15, test 15`` from per-subset class counts, in the report's order, excluded rows left out."""
    return ", ".join(f"{name} {sum(counts)}" for name, counts in subset_counts.items() if name != EXCLUDED_SUBSET)


class RunFiles(Callback):
    """Writes the data's ``split.csv`` and ``data_report.json`` into the run directory when ``fit`` starts.

    ``on_fit_start`` rather than ``setup``: Lightning restores the datamodule's state (the split saved in a
    checkpoint, when resuming with ``--ckpt_path``) after ``setup`` and before ``on_fit_start``, so the files
    describe the split the run really trains on. The W&B callback uploads them in ``on_train_start``, later still.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        directory = run_dir(trainer)  # every rank: trainer.log_dir is a broadcast under DDP
        data = evaluation_data(trainer)
        if data is None or not trainer.is_global_zero:
            return
        path = data.write_split(directory)
        rank_zero_info(f"split written to {path}: {split_summary(data.data_report()['subset_counts'])}")
