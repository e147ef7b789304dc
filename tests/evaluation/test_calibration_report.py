"""The test report's calibration and referral parts: sections of metrics.json, the two plots, and TestReport passing
the plain logits and the checkpoint's settings through."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from bloodcls.callbacks import reports
from bloodcls.evaluation.calibration_report import (
    CALIBRATION_REPORT_FILES,
    COVERAGE_PNG,
    RELIABILITY_BEFORE_AFTER_PNG,
    softmax,
)
from bloodcls.evaluation.report import REPORT_FILES, clear_report, write_report
from bloodcls.inference import InferenceSettings
from bloodcls.inference import calibration as C

NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """Over-confident logits (N, K) and labels."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(0.0, 1.0, (60, 3))
    logits[np.arange(60), labels] += 1.0
    return 5.0 * logits, labels


def _nonblank(path: Path) -> bool:
    pixels = imread(path)
    return bool(pixels.std() > 0.01)


def test_a_temperature_adds_the_before_after_section_and_diagram(tmp_path: Path, case: Any) -> None:
    logits, labels = case
    probs = C.tempered_probabilities(logits, 3.0)
    metrics = write_report(tmp_path, probs, labels, NAMES, logits=logits, temperature=3.0, review_threshold=0.7)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    section = saved["calibration"]
    assert section["temperature"] == 3.0
    # before: softmax of the plain logits; after: the reported probabilities (not the other way round).
    assert section["before"] == pytest.approx(C.calibration_summary(softmax(logits), labels))
    assert section["after"] == pytest.approx(C.calibration_summary(probs, labels))
    assert section["after"]["ece"] == pytest.approx(saved["ece"]) and section["after"]["nll"] == pytest.approx(
        saved["nll"]
    )
    assert section["after"]["nll"] < section["before"]["nll"]
    assert saved["referral"] == pytest.approx(C.referral_at(probs, labels, 0.7))
    assert metrics["referral"]["review_threshold"] == 0.7
    for name in (*REPORT_FILES[:-1], *CALIBRATION_REPORT_FILES):  # every file but the per-image CSV (no paths)
        assert (tmp_path / name).is_file(), name
    assert _nonblank(tmp_path / RELIABILITY_BEFORE_AFTER_PNG) and _nonblank(tmp_path / COVERAGE_PNG)


def test_temperature_one_draws_no_before_after_but_always_the_coverage_curve(tmp_path: Path, case: Any) -> None:
    logits, labels = case
    (tmp_path / RELIABILITY_BEFORE_AFTER_PNG).write_text("from an earlier report")
    write_report(tmp_path, softmax(logits), labels, NAMES, logits=logits)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "calibration" not in saved and saved["referral"] == {"review_threshold": None}
    assert (tmp_path / COVERAGE_PNG).is_file() and not (tmp_path / RELIABILITY_BEFORE_AFTER_PNG).exists()
    clear_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_logits_of_another_shape_are_refused(tmp_path: Path, case: Any) -> None:
    logits, labels = case
    with pytest.raises(ValueError, match="logits has shape"):
        write_report(tmp_path, softmax(logits), labels, NAMES, logits=logits[:, :2], temperature=2.0)


def test_test_report_passes_logits_and_the_checkpoints_settings(tmp_path: Path, case: Any) -> None:
    logits, labels = case
    probs = C.tempered_probabilities(logits, 2.0)
    trainer = SimpleNamespace(
        log_dir=str(tmp_path), default_root_dir=str(tmp_path), is_global_zero=True, world_size=1, datamodule=None
    )
    trainer.loggers, trainer.ckpt_path = [], "best.ckpt"
    module = SimpleNamespace(
        class_names=NAMES, num_classes=3, inference=InferenceSettings(temperature=2.0, review_threshold=0.8)
    )
    report = reports.TestReport(output_dir=str(tmp_path), print_table=False)
    report.on_test_epoch_start(trainer, module)  # type: ignore[arg-type]
    for part in (slice(0, 25), slice(25, 60)):
        outputs = {
            "probs": torch.tensor(probs[part], dtype=torch.float32),
            "logits": torch.tensor(logits[part], dtype=torch.float32),
            "label": torch.tensor(labels[part]),
            "index": torch.arange(60)[part],
        }
        report.on_test_batch_end(trainer, module, outputs, None, 0)  # type: ignore[arg-type]
    report.on_test_epoch_end(trainer, module)  # type: ignore[arg-type]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["calibration"]["temperature"] == 2.0
    assert saved["calibration"]["before"]["nll"] == pytest.approx(C.nll(softmax(logits), labels), rel=1e-5)
    assert saved["referral"]["review_threshold"] == 0.8
    assert saved["run"]["inference"]["temperature"] == 2.0
