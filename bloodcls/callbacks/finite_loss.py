"""Stop a fit at the first non-finite training loss, before any checkpoint of that step is written."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser

from bloodcls.errors import UserInputError

FINITE_LOSS_KEY = "stop_on_nonfinite_loss"


class NonFiniteLossError(UserInputError):
    """The training loss became NaN or infinite; usually a learning rate, precision or data problem to fix."""


def training_loss(outputs: Any) -> torch.Tensor | None:
    """The loss a ``training_step`` returned: the tensor itself or ``outputs["loss"]``; None when there is none."""
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return loss if isinstance(loss, torch.Tensor) and loss.numel() > 0 else None


def nonfinite_message(step: int, value: float) -> str:
    return (
        f"the training loss is {value} at global step {step}: stopped, no checkpoint of this step was written "
        f"(lower the learning rate, use 32-true precision or check the data; --{FINITE_LOSS_KEY} false goes on)"
    )


class FiniteLoss(Callback):
    """Raises ``NonFiniteLossError`` (one error line, non-zero exit) at the first non-finite loss.

    Runs in ``on_train_batch_end``, which Lightning calls on every other callback before the checkpoint callbacks,
    so a step-based checkpoint of the bad step is never written; epoch checkpoints come later still. The check
    reads the loss back from the device each step, as the progress bar already does for ``train/loss``.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = training_loss(outputs)
        if loss is None:
            return
        value = float(loss.detach().float().mean())
        if not math.isfinite(value):
            raise NonFiniteLossError(nonfinite_message(trainer.global_step, value))


def add_finite_loss_argument(parser: LightningArgumentParser) -> None:
    """``--stop_on_nonfinite_loss true|false`` (default true; read by ``bloodcls fit`` only)."""
    parser.add_argument(
        f"--{FINITE_LOSS_KEY}",
        type=bool,
        default=True,
        help="fit: stop with an error at the first NaN / infinite training loss (false: train on regardless)",
    )
