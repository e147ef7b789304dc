"""Tests for bloodcls.evaluation.report: files written by write_report and the rich console table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from bloodcls.evaluation.metrics import classification_metrics
from bloodcls.evaluation.report import PER_CLASS_FIELDS, print_report, write_report

NAMES = ["basophil", "eosinophil", "erythroblast", "lymphocyte"]
N = 40


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = np.concatenate([np.arange(len(NAMES)), rng.integers(0, len(NAMES), N - len(NAMES))])
    logits = rng.normal(0.0, 1.0, (N, len(NAMES)))
    logits[np.arange(N), targets] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, case: tuple[np.ndarray, np.ndarray]) -> Path:
    # Rendering three figures is the slow part (~1 s), so every file check shares one report.
    probs, targets = case
    out = tmp_path_factory.mktemp("report") / "nested" / "test"
    extra = {"checkpoint": Path("runs/a/best.ckpt"), "skipped": ["bad.png"]}
    returned = write_report(out, probs, targets, NAMES, paths=[f"img/{i}.jpg" for i in range(N)], extra=extra)
    (out / "_returned.json").write_text(json.dumps(returned, default=str))
    return out


def test_all_files_are_written(report_dir: Path) -> None:
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "roc.png", "calibration.png"):
        assert (report_dir / name).stat().st_size > 0, name
    for name in ("confusion_matrix.png", "roc.png", "calibration.png"):
        image = imread(report_dir / name)  # a real, decodable PNG
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300


def _sklearn_reference(probs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """The report's numbers computed independently with scikit-learn (and numpy for the ECE)."""
    pred = probs.argmax(axis=1)
    k = len(NAMES)
    conf = probs.max(axis=1)
    bins = np.minimum((conf * 15).astype(int), 14)  # 15 equal-width bins, 1.0 in the last
    ece = sum(
        abs((pred == targets)[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
        for b in range(15)
        if (bins == b).any()
    )
    return {
        "n": len(targets),
        "acc": accuracy_score(targets, pred),
        "balanced_acc": balanced_accuracy_score(targets, pred),
        "macro_f1": f1_score(targets, pred, average="macro"),
        "macro_precision": precision_score(targets, pred, average="macro"),
        "macro_recall": recall_score(targets, pred, average="macro"),
        "macro_specificity": np.mean([recall_score(targets != c, pred != c) for c in range(k)]),
        "auroc": roc_auc_score(targets, probs, multi_class="ovr"),
        "nll": log_loss(targets, probs),
        "ece": ece,
        "confusion_matrix": confusion_matrix(targets, pred).tolist(),
        "per_class": {
            "support": np.bincount(targets, minlength=k).tolist(),
            "precision": precision_score(targets, pred, average=None).tolist(),
            "recall": recall_score(targets, pred, average=None).tolist(),
            "f1": f1_score(targets, pred, average=None).tolist(),
            "specificity": [recall_score(targets != c, pred != c) for c in range(k)],
            "auroc": [roc_auc_score(targets == c, probs[:, c]) for c in range(k)],
        },
    }


def test_metrics_json_matches_sklearn(report_dir: Path, case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    written = json.loads((report_dir / "metrics.json").read_text())
    assert written.pop("run") == {"checkpoint": "runs/a/best.ckpt", "skipped": ["bad.png"]}
    ref = _sklearn_reference(probs, targets)
    assert written["confusion_matrix"] == ref.pop("confusion_matrix")
    ref_per_class = ref.pop("per_class")
    for key, value in ref.items():
        assert written[key] == pytest.approx(value, abs=1e-6), key
    assert [r["class"] for r in written["per_class"]] == NAMES
    for key, values in ref_per_class.items():
        assert [r[key] for r in written["per_class"]] == pytest.approx(values, abs=1e-6), key
    # The case is not trivial: a wrong metric would not pass by coincidence.
    assert 0.5 < ref["acc"] < 1.0 and len(set(ref_per_class["f1"])) == len(NAMES)
    returned = json.loads((report_dir / "_returned.json").read_text())
    assert returned == {**written, "run": {"checkpoint": "runs/a/best.ckpt", "skipped": ["bad.png"]}}


def test_per_class_csv(report_dir: Path, case: tuple[np.ndarray, np.ndarray]) -> None:
    with (report_dir / "per_class.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == PER_CLASS_FIELDS
    assert [r["class"] for r in rows] == NAMES
    ref = _sklearn_reference(*case)["per_class"]
    assert [int(r["support"]) for r in rows] == ref["support"]
    for key in ("precision", "recall", "f1", "specificity", "auroc"):
        assert [float(r[key]) for r in rows] == pytest.approx(ref[key], abs=1e-6), key


def test_predictions_csv(report_dir: Path, case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    with (report_dir / "test_predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N
    assert list(rows[0]) == ["path", "label", "pred", "confidence", *(f"prob_{c}" for c in NAMES)]
    for i in (0, N - 1):
        assert rows[i]["path"] == f"img/{i}.jpg"
        assert rows[i]["label"] == NAMES[targets[i]]
        assert rows[i]["pred"] == NAMES[probs[i].argmax()]
        assert float(rows[i]["confidence"]) == pytest.approx(probs[i].max(), abs=1e-6)
        assert [float(rows[i][f"prob_{c}"]) for c in NAMES] == pytest.approx(probs[i], abs=1e-6)


def test_paths_are_checked_before_anything_is_written(tmp_path: Path, case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    with pytest.raises(ValueError, match="paths has 3 entries"):
        write_report(tmp_path / "out", probs, targets, NAMES, paths=["a", "b", "c"])
    assert not (tmp_path / "out").exists()


def _render(metrics: dict[str, Any]) -> str:
    console = Console(record=True, width=120)
    print_report(metrics, console=console)
    return console.export_text()


def test_print_report_shows_headline_and_classes(report_dir: Path) -> None:
    metrics = json.loads((report_dir / "metrics.json").read_text())
    text = _render(metrics)
    assert "Test report" in text
    assert f"{100 * metrics['acc']:.2f}%" in text
    assert f"{100 * metrics['balanced_acc']:.2f}%" in text
    assert f"{100 * metrics['macro_f1']:.2f}%" in text
    for name in NAMES:
        assert name in text
    row = metrics["per_class"][1]
    assert f"{100 * row['specificity']:.2f}%" in text


def test_print_report_handles_undefined_auroc() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    text = _render(classification_metrics(probs, np.array([0, 0]), ["alpha", "beta"]))
    assert "n/a" in text and "alpha" in text and "100.00%" in text


def test_a_latin1_path_and_a_new_report_without_paths(tmp_path: Path, case: tuple[np.ndarray, np.ndarray]) -> None:
    import os

    probs, targets = case
    paths = [f"img/{i}.jpg" for i in range(N - 1)] + [os.fsdecode(b"img/caf\xe9.png")]
    write_report(tmp_path, probs, targets, NAMES, paths=paths)
    text = (tmp_path / "test_predictions.csv").read_bytes().decode("utf-8")  # strict UTF-8
    assert text.splitlines()[-1].startswith("img/caf\\xe9.png,")
    (tmp_path / "notes.txt").write_text("mine")

    write_report(tmp_path, probs, targets, NAMES)  # no paths: the earlier per-image file must not stay beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calibration.png",
        "confusion_matrix.png",
        "coverage.png",
        "metrics.json",
        "notes.txt",
        "per_class.csv",
        "roc.png",
    ]
