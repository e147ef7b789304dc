"""TestReport / PredictionsCSV: a stage removes its earlier outputs, a stage that produced nothing is an error,
and paths that are not UTF-8 are written by the one rule of bloodcls.io."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bloodcls.callbacks.reports import PredictionsCSV, TestReport
from bloodcls.errors import UserInputError
from bloodcls.evaluation.report import REPORT_FILES

LATIN1_PATH = os.fsdecode(b"/in/caf\xe9.png")


class PredictData:
    """The EvaluationData calls PredictionsCSV makes."""

    def sample_ids(self) -> list[str]:
        return []

    def predict_paths(self) -> list[str]:
        return ["/in/a.png", LATIN1_PATH]

    def predict_skipped(self) -> list[tuple[str, str]]:
        return [(os.fsdecode(b"/in/x\xff.jpg"), "empty file")]

    def data_report(self) -> dict[str, Any]:
        return {}

    def write_split(self, directory: str | Path) -> Path:
        return Path(directory)


def _trainer(tmp_path: Path, datamodule: Any = None) -> Any:
    return SimpleNamespace(
        log_dir=str(tmp_path), default_root_dir=str(tmp_path), is_global_zero=True, world_size=1, datamodule=datamodule
    )


def _module() -> Any:
    return SimpleNamespace(class_names=["a", "b"], num_classes=2)


def test_predict_removes_earlier_predictions_when_it_starts(tmp_path: Path) -> None:
    for name in ("predictions.csv", "predictions_skipped.csv", "keep.txt"):
        (tmp_path / name).write_text("from an earlier run\n")
    PredictionsCSV().setup(_trainer(tmp_path), _module(), "predict")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_predict_fit_stage_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "predictions.csv").write_text("kept\n")
    PredictionsCSV().setup(_trainer(tmp_path), _module(), "fit")
    assert (tmp_path / "predictions.csv").read_text() == "kept\n"


def test_predict_with_no_rows_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="predict classified no images"):
        PredictionsCSV().write_on_epoch_end(_trainer(tmp_path, PredictData()), _module(), [], [])
    assert list(tmp_path.iterdir()) == []


def test_predictions_with_a_latin1_path_are_utf8(tmp_path: Path) -> None:
    batch = {"probs": torch.tensor([[0.9, 0.1], [0.2, 0.8]]), "index": torch.tensor([0, 1])}
    PredictionsCSV().write_on_epoch_end(_trainer(tmp_path, PredictData()), _module(), [batch], [])
    rows = list(csv.reader((tmp_path / "predictions.csv").read_bytes().decode("utf-8").splitlines()))
    assert [r[:2] for r in rows[1:]] == [["/in/a.png", "a"], ["/in/caf\\xe9.png", "b"]]
    skipped = (tmp_path / "predictions_skipped.csv").read_bytes().decode("utf-8")
    assert skipped.splitlines() == ["path,reason", "/in/x\\xff.jpg,empty file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predict.html", "predictions.csv", "predictions_skipped.csv"]


def test_test_report_clears_the_earlier_report_and_refuses_an_empty_test(tmp_path: Path) -> None:
    for name in (*REPORT_FILES, "notes.txt"):
        (tmp_path / name).write_text("from an earlier test\n")
    report = TestReport(output_dir=str(tmp_path), print_table=False)
    report.setup(_trainer(tmp_path), _module(), "test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    report.on_test_epoch_start(_trainer(tmp_path), _module())
    with pytest.raises(UserInputError, match="test evaluated no images"):
        report.on_test_epoch_end(_trainer(tmp_path), _module())
