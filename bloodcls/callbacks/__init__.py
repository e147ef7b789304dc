"""Every Lightning callback of a bloodcls run: checkpoints, the run's split files, test report, predictions,
W&B config and files, Ray Tune reporting. Strategy-specific callbacks (self-training rounds, RBM pretraining, ...)
live here too, one module each."""

from bloodcls.callbacks.checkpointing import add_checkpoint_arguments, best_checkpoint, last_checkpoint
from bloodcls.callbacks.reports import PredictionsCSV, TestReport
from bloodcls.callbacks.run_files import RunFiles
from bloodcls.callbacks.tune import ReportToTune
from bloodcls.callbacks.wandb import SaveConfigToLoggers, WandbLogger

__all__ = [
    "PredictionsCSV",
    "ReportToTune",
    "RunFiles",
    "SaveConfigToLoggers",
    "TestReport",
    "WandbLogger",
    "add_checkpoint_arguments",
    "best_checkpoint",
    "last_checkpoint",
]
