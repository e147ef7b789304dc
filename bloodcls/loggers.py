"""Lightning's CSVLogger whose ``metrics.csv`` and ``hparams.yaml`` are never cut mid-line (atomic rewrites)."""

from __future__ import annotations

import csv
import os
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from bloodcls.io import atomic_open, atomic_path


class AtomicExperimentWriter(ExperimentWriter):
    """Keeps every row logged so far and rewrites ``metrics.csv`` atomically on each save.

    Lightning's writer appends to the file in place: a save interrupted by a full disk or a kill leaves a partial
    last line. A run logs at most a few thousand rows, so rewriting the whole file at each flush is cheap.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)  # Lightning removes an earlier metrics.csv of a reused version here
        self._rows: list[dict[str, Any]] | None = None  # everything in metrics.csv; read on the first save

    def _local(self) -> bool:
        return isinstance(self._fs, LocalFileSystem)

    def _saved_rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = []
            if os.path.isfile(self.metrics_file_path):  # a file Lightning would have appended to
                with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh)
                    self._rows = list(reader)
                    self.metrics_keys = sorted(set(self.metrics_keys) | set(reader.fieldnames or []))
        return self._rows

    def save(self) -> None:
        if not self._local():
            super().save()  # a remote filesystem (fsspec URL) has no atomic rename: Lightning's own append
            return
        if not self.metrics:
            return
        rows = self._saved_rows() + self.metrics
        self._record_new_keys()
        with atomic_open(self.metrics_file_path, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        self._rows = rows
        self.metrics = []  # only once saved: a failed save keeps them for the next try

    def log_hparams(self, params: dict[str, Any]) -> None:
        if not self._local():
            super().log_hparams(params)
            return
        self.hparams.update(params)
        with atomic_path(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` (same arguments, same files) whose ``metrics.csv`` and
    ``hparams.yaml`` are written atomically; a full disk ends in a one-line error naming the file."""

    @property
    @rank_zero_experiment  # other ranks get Lightning's dummy, as with the parent class
    def experiment(self) -> AtomicExperimentWriter:
        if self._experiment is not None:
            return self._experiment  # type: ignore[return-value]
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment
