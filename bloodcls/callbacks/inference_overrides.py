"""``bloodcls validate`` / ``test`` / ``predict`` ``--tta`` and ``--ensemble``: applied after Lightning restored the
checkpoint (which sets the model's own inference settings) and before the first batch, and recorded in
``inference.json`` beside the metrics, report or predictions (the test report copies it into
metrics.json["inference"]). ``validate`` takes them so that TTA and ensembles are chosen on validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from bloodcls.callbacks.reports import INFERENCE_JSON, PredictionsCSV, TestReport
from bloodcls.distributed import run_dir
from bloodcls.errors import UserInputError
from bloodcls.inference.ensemble import describe_members, ensemble_review_threshold, load_member, set_tta
from bloodcls.io import remove_outputs, write_json


class InferenceOverrides(Callback):
    """Sets ``tta`` on the restored model and, with ``ensemble`` checkpoints, makes the model's
    ``eval_probabilities`` -- which ``test_step`` and ``predict_step`` (and ``validation_step`` under
    ``bloodcls validate``) use for metrics, the report and predictions.csv -- the mean over the model and the
    members (``Classifier.ensemble_members``), each with its own temperature, TTA and normalisation."""

    def __init__(self, ckpt_path: str | None, tta: str | None = None, ensemble: list[str] | None = None) -> None:
        self.ckpt_path = ckpt_path
        self.tta = tta
        self.ensemble = list(ensemble or [])
        self._members: list[Any] = []

    def _out_dir(self, trainer: L.Trainer, stage: str) -> Path:
        """Where the stage's report / predictions.csv go: the directory of their writer callback, else the run's."""
        # Every rank calls this: run_dir is a broadcast under DDP.
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if stage == "test" and isinstance(callback, TestReport):
                return callback._out_dir(trainer)
            if stage == "predict" and isinstance(callback, PredictionsCSV):
                return callback._path(trainer).parent
        return run_dir(trainer)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage in ("validate", "test", "predict"):
            out_dir = self._out_dir(trainer, stage)
            if trainer.is_global_zero:
                remove_outputs(out_dir / INFERENCE_JSON)  # never a stale record of another run

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The checkpoint was restored (Classifier.on_load_checkpoint set pl_module.inference) before this hook.
        model: Any = pl_module  # a bloodcls Classifier
        if self.tta is not None:
            set_tta(model, self.tta)
        # The members compute like the restored model: same device, same parameter dtype (a "-true" precision).
        self._members = [
            load_member(p, self.tta).to(device=pl_module.device, dtype=pl_module.dtype) for p in self.ensemble
        ]
        model.ensemble_members = list(self._members)  # Classifier.eval_probabilities averages over them
        threshold = ensemble_review_threshold(model, 1 + len(self._members))
        model.inference = replace(model.inference, review_threshold=threshold)
        paths = [str(Path(str(self.ckpt_path)).resolve()), *self.ensemble]
        record = {
            "stage": stage,
            "members": describe_members(paths, [pl_module, *self._members]),
            "combine": "mean of the members' probabilities" if self._members else "single model",
        }
        out_dir = self._out_dir(trainer, stage)
        if trainer.is_global_zero:
            write_json(out_dir / INFERENCE_JSON, record)

    def _remove(self, pl_module: L.LightningModule) -> None:
        model: Any = pl_module  # a bloodcls Classifier
        model.ensemble_members = []
        self._members = []

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "validate":  # bloodcls validate only: never fit's validation loop
            return
        overridden = self.tta is not None or bool(self.ensemble)
        if overridden and not getattr(pl_module, "validates_with_eval_probabilities", True):
            raise UserInputError(
                f"--tta / --ensemble: {type(pl_module).__name__} validates with its own probe, not with the "
                "classifier's probabilities, so they do not apply to it"
            )
        self._apply(trainer, pl_module, "validate")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._remove(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, "predict")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove(pl_module)  # the test report copied inference.json into metrics.json["inference"]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove(pl_module)
