"""CalibrateAfterFit: ``bloodcls calibrate`` on the run's checkpoints when ``fit`` ends, so a trained run is calibrated
without a second command. Add it in YAML::

    trainer:
      callbacks:
        - class_path: bloodcls.callbacks.calibration.CalibrateAfterFit
          init_args: {target_accuracy: 0.99}
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.commands.calibrate import TTA_CHOICES, CalibrationResult, calibrate_checkpoint
from bloodcls.errors import UserInputError


class CalibrateAfterFit(Callback):
    """Fit the temperature (and, with ``target_accuracy``, the referral threshold) of the best checkpoint -- and of
    ``last.ckpt`` unless ``include_last`` is off -- on the validation split, and store them in the files, exactly as
    ``bloodcls calibrate`` does. Runs on rank 0 after training; the other ranks wait for it.

    Args:
        target_accuracy: accuracy the accepted validation cells must reach; ``None``: no referral threshold.
        tta: test-time augmentation to calibrate for (``none`` / ``d4``); ``None``: the checkpoint's (``none``).
        include_last: calibrate ``last.ckpt`` too (its own weights, its own fit).
    """

    def __init__(self, target_accuracy: float | None = None, tta: str | None = None, include_last: bool = True) -> None:
        if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
            raise UserInputError(f"CalibrateAfterFit.target_accuracy={target_accuracy}: expected a number in (0, 1]")
        if tta is not None and tta not in TTA_CHOICES:
            raise UserInputError(f"CalibrateAfterFit.tta={tta!r}: expected one of {', '.join(TTA_CHOICES)}")
        self.target_accuracy = target_accuracy
        self.tta = tta
        self.include_last = include_last
        self.results: list[CalibrationResult] = []

    def checkpoint_paths(self, trainer: L.Trainer) -> list[Path]:
        """The files to calibrate: every checkpoint callback's best file (and last file), each once."""
        paths: list[Path] = []
        for callback in trainer.checkpoint_callbacks:
            names = [getattr(callback, "best_model_path", "")]
            if self.include_last:
                names.append(getattr(callback, "last_model_path", ""))
            # The last-checkpoint callback has no monitor: its "best" file is last.ckpt.
            if not self.include_last and getattr(callback, "monitor", None) is None:
                names = []
            for name in names:
                path = Path(name) if name else None
                if path is not None and path.is_file() and path not in paths:
                    paths.append(path)
        return paths

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            device = str(pl_module.device)
            for path in self.checkpoint_paths(trainer):
                result = calibrate_checkpoint(path, self.target_accuracy, self.tta, device=device)
                self.results.append(result)
                rank_zero_info(f"calibrated after fit: {result.message}")
        trainer.strategy.barrier("calibrate_after_fit")  # ranks leave fit together, after the files are final
