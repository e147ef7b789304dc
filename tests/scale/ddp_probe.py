"""Test-only callback for the DDP tests: each rank appends what it saw (batch indices, pseudo-labels, teacher
state hashes) to ``<out_dir>/rank<R>.jsonl``. Imported in the ``bloodcls`` subprocess through PYTHONPATH."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def state_hash(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer of ``module``, bit for bit."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _indices(part: dict[str, torch.Tensor], key: str) -> list[int] | None:
    return part[key].tolist() if key in part else None


class DumpBatches(Callback):
    """Records per rank: every training batch's ``index`` (labeled) and ``pool_index`` / ``index`` (unlabeled),
    the pseudo-labels installed at each epoch start, and the teacher's state hash after every step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _write(self, trainer: L.Trainer, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.out_dir / f"rank{trainer.global_rank}.jsonl").open("a") as fh:
            fh.write(json.dumps({"world": trainer.world_size, **record}) + "\n")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = trainer.datamodule
        pseudo = datamodule.pseudo_labels
        record: dict[str, Any] = {"kind": "epoch", "epoch": trainer.current_epoch}
        record["pool_size"] = len(datamodule.unlabeled_dataset())
        if pseudo is not None:
            record["pseudo_positions"] = pseudo.positions.tolist()
            record["pseudo_labels"] = pseudo.labels.tolist()
        self._write(trainer, record)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        labeled = batch["labeled"] if "labeled" in batch else batch
        unlabeled = batch.get("unlabeled") if "labeled" in batch else None
        record: dict[str, Any] = {
            "kind": "batch",
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "labeled": _indices(labeled, "index"),
        }
        if unlabeled is not None:
            record["unlabeled_pool_index"] = _indices(unlabeled, "pool_index")
            record["unlabeled_index"] = _indices(unlabeled, "index")
        self._write(trainer, record)
        # Callbacks run before the module's on_train_batch_end (where the EMA update happens), and DDP
        # re-broadcasts buffers in the next forward: the state after step k is seen here, at the start of k + 1.
        self._teacher_hash(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._teacher_hash(trainer, pl_module)

    def _teacher_hash(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        teacher = getattr(pl_module, "teacher", None)
        if isinstance(teacher, torch.nn.Module):
            record = {"kind": "teacher", "step": trainer.global_step, "hash": state_hash(teacher)}
            self._write(trainer, {**record, "student_hash": state_hash(pl_module.net)})
