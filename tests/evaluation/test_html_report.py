"""The HTML reports: every section of report.html from a written test report, optional files tolerated, user text
escaped, images inline and decodable; predict.html from a predictions.csv; the pseudo-label panel from metrics.csv."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcls.evaluation.cam_gallery import Gallery, GalleryCell
from bloodcls.evaluation.html_predict import build_predict_html, write_predict_html
from bloodcls.evaluation.html_report import (
    CALIBRATION_KEY,
    COVERAGE_PNG,
    RELIABILITY_BEFORE_AFTER_PNG,
    build_test_html,
    write_test_html,
)
from bloodcls.evaluation.report import write_report

NAMES = ["basophil", "eosinophil", "<b>lympho&cyte</b>"]  # a folder name with HTML in it must not become markup
IMG_SRC = re.compile(r'<img [^>]*src="data:image/png;base64,([^"]+)"')


def images_of(page: str) -> list[Image.Image]:
    """Every <img> of the page decoded (a broken data URI fails here)."""
    out = []
    for data in IMG_SRC.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        out.append(image)
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fit run folder (config, data report, metrics.csv with pseudo-label columns) with its test report."""
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    targets = np.arange(30) % 3
    logits = rng.normal(0.0, 1.0, (30, 3))
    logits[np.arange(30), targets] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    paths = [f"cells/{i}.png" for i in range(30)]
    extra = {"ckpt_path": str(run / "checkpoints" / "best.ckpt")}
    write_report(run / "test", probs, targets, NAMES, paths=paths, extra=extra)
    (run / "config.yaml").write_text("model:\n  class_path: bloodcls.strategies.FixMatch  # <not a tag>\n")
    data_report = {
        "source": "folder",
        "root": "/data/cells",
        "image_size": 32,
        "class_names": NAMES,
        "n_listed": 33,
        "n_usable": 30,
        "skipped": [["bad.png", "truncated"]],
        "duplicate_groups": [["a.png", "b.png"]],
        "label_conflicts": [],
        "subset_counts": {"train": [6, 6, 6], "val": [2, 2, 2], "test": [10, 10, 10]},
    }
    (run / "data_report.json").write_text(json.dumps(data_report))
    with (run / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["epoch", "step", "train/mask_ratio", "train/pseudo_acc", *(f"train/accepted/{n}" for n in NAMES)]
        )
        for step in range(12):
            writer.writerow([step // 4, step, step / 12, 0.8, 3, 2, step % 3])
    return run / "test"


def test_every_section_is_there(report_dir: Path) -> None:
    page = build_test_html(report_dir)
    for anchor in ("metrics", "confusion", "per-class", "roc", "calibration", "coverage", "cams", "pseudo-labels"):
        assert f'<section id="{anchor}">' in page
    assert '<section id="data">' in page and '<section id="run">' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # no script, no network
    images = images_of(page)
    assert len(images) >= 4 and all(min(im.size) > 10 for im in images)  # ROC, reliability, coverage, pseudo-labels
    assert "Split sizes" in page and "Skipped files: 1" in page and "Duplicate groups" in page
    assert "git commit" in page and "torch" in page


def test_confusion_table_has_counts_and_row_percentages(report_dir: Path) -> None:
    metrics = json.loads((report_dir / "metrics.json").read_text())
    cm = np.asarray(metrics["confusion_matrix"])
    page = build_test_html(report_dir)
    table = page.split('<section id="confusion">')[1].split("</table>")[0]
    cells = re.findall(r"<td[^>]*>(\d+)<br><small>([\d.]+)%</small></td>", table)
    assert [int(c) for c, _ in cells] == cm.ravel().tolist()
    share = [float(p) for _, p in cells]
    expected = (100 * cm / cm.sum(axis=1, keepdims=True)).ravel()
    assert np.allclose(share, expected, atol=0.051)


def test_class_names_and_config_are_escaped(report_dir: Path) -> None:
    page = build_test_html(report_dir)
    assert "<b>lympho" not in page
    assert "&lt;b&gt;lympho&amp;cyte&lt;/b&gt;" in page
    assert "# &lt;not a tag&gt;" in page


def test_missing_optional_files_are_tolerated(report_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "test"
    bare.mkdir()
    shutil.copy(report_dir / "metrics.json", bare / "metrics.json")  # nothing else: no PNGs, CSVs, run files
    metrics = json.loads((bare / "metrics.json").read_text())
    metrics["run"] = {}
    (bare / "metrics.json").write_text(json.dumps(metrics))
    path = write_test_html(bare, None)
    page = path.read_text()
    assert path.name == "report.html"
    for absent in ("roc", "calibration", "coverage", "pseudo-labels"):
        assert f'<section id="{absent}">' not in page
    assert "data_report.json was not found" in page and "config.yaml was not found" in page
    assert "CAM gallery is off" in page
    assert images_of(page) == []


def test_calibration_panels_render_when_present(report_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "test"
    shutil.copytree(report_dir, out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics[CALIBRATION_KEY] = {"before": {"nll": 0.9, "ece": 0.08}, "after": {"nll": 0.7, "ece": 0.02}, "T": 1.7}
    (out / "metrics.json").write_text(json.dumps(metrics))
    Image.new("RGB", (40, 20), (10, 200, 30)).save(out / RELIABILITY_BEFORE_AFTER_PNG)
    Image.new("RGB", (30, 20), (200, 10, 30)).save(out / COVERAGE_PNG)
    page = build_test_html(out)
    section = page.split('<section id="calibration">')[1].split("</section>")[0]
    assert ">before<" in section and ">after<" in section and "0.0800" in section and "0.0200" in section
    assert [im.size for im in images_of(section)] == [(40, 20)]  # the before / after diagram replaces the single one
    coverage = page.split('<section id="coverage">')[1].split("</section>")[0]
    assert [im.size for im in images_of(coverage)] == [(30, 20)]  # the calibration step's curve, not the fallback


def test_gallery_cells_grouped_by_class_and_kind(report_dir: Path) -> None:
    pair = np.zeros((32, 64, 3), dtype=np.uint8)
    pair[:, 32:] = 255
    cells = [
        GalleryCell("correct", 0, 0, 0.99, "cells/0.png", pair),
        GalleryCell("mistake", 2, 1, 0.91, "cells/<x>.png", pair),
    ]
    page = build_test_html(report_dir, Gallery(cells=cells))
    gallery = page.split('<section id="cams">')[1].split("</section>")[0]
    assert "basophil: most confident correct" in gallery
    assert "&lt;b&gt;lympho&amp;cyte&lt;/b&gt;: most confident mistakes" in gallery
    assert "cells/&lt;x&gt;.png" in gallery
    assert [im.size for im in images_of(gallery)] == [(64, 32), (64, 32)]
    refused = build_test_html(report_dir, Gallery(message="no CAM gallery: RNN has no convolutional layer"))
    assert "RNN has no convolutional layer" in refused


def test_predict_page(tmp_path: Path) -> None:
    for i in range(5):
        Image.new("RGB", (48, 48), (40 * i, 100, 150)).save(tmp_path / f"cell{i}.png")
    with (tmp_path / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "pred", "confidence", "needs_review", "prob_a", "prob_<b>"])
        for i, (pred, conf) in enumerate([("a", 0.9), ("a", 0.95), ("<b>", 0.4), ("a", 0.55), ("<b>", 0.99)]):
            writer.writerow([str(tmp_path / f"cell{i}.png"), pred, conf, conf < 0.6, conf, 1 - conf])
    path = write_predict_html(tmp_path / "predictions.csv", skipped=2, threshold=0.6)
    page = path.read_text()
    assert path.name == "predict.html"
    assert 'flagged for review (needs_review)</td><td class="l">2 (40.0%)' in page
    assert '<td class="l">a</td><td>3</td>' in page and "&lt;b&gt;" in page and "<b>" not in page
    images = images_of(page)
    assert len(images) == 1 + 5  # histogram + every cell (fewer than the gallery's limit)
    low = page.split('<section id="low-confidence">')[1]
    assert low.index("cell2.png") < low.index("cell3.png") < low.index("cell0.png")  # least confident first


def test_predict_page_without_review_column_or_images(tmp_path: Path) -> None:
    (tmp_path / "predictions.csv").write_text("path,pred,confidence,prob_a\nmissing.png,a,0.7,0.7\n")
    page = build_predict_html(tmp_path / "predictions.csv")
    assert "needs_review" not in page and "no thumbnails" in page


def test_pseudo_label_panel_with_per_class_accuracy(tmp_path: Path) -> None:
    from bloodcls.evaluation.html_training import pseudo_label_section

    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train/mask_ratio,train/accepted/a,train/pseudo_acc/a,val/acc\n0,1,0.5,3,0.9,\n0,2,,,,0.7\n"
    )
    html = pseudo_label_section(path, ["a"])
    assert html is not None and len(images_of(html)) == 1 and "was not logged" not in html
    supervised = tmp_path / "supervised.csv"
    supervised.write_text("epoch,step,train/loss,val/acc\n0,1,0.5,\n")
    assert pseudo_label_section(supervised, ["a"]) is None
    assert pseudo_label_section(None, ["a"]) is None
