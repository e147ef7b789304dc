"""The one call each report callback makes at its end (rank 0): the HTML page, its CAM gallery, and W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.callbacks.wandb import log_html_report
from bloodcls.data.interface import evaluation_data
from bloodcls.evaluation.cam_gallery import Gallery, GalleryCollector, build_gallery
from bloodcls.evaluation.html_predict import write_predict_html
from bloodcls.evaluation.html_report import write_test_html


def write_html_report(
    out_dir: str | Path, trainer: L.Trainer, pl_module: L.LightningModule, collector: GalleryCollector | None
) -> Path:
    """``report.html`` for the test report just written in ``out_dir``; Grad-CAMs of the cells ``collector`` kept
    (None: gallery off). Logged to W&B when a W&B logger is on."""
    gallery: Gallery | None = None
    if collector is not None:
        data = evaluation_data(trainer)
        gallery = build_gallery(collector, pl_module, data.sample_ids() if data is not None else None)
        if getattr(trainer, "world_size", 1) > 1 and gallery.message is None:
            gallery.scope = f"from rank 0's shard of the test split ({collector.seen} images)"
    path = write_test_html(out_dir, gallery)
    log_html_report(getattr(trainer, "loggers", []), path, [(c.kind, c.pair) for c in gallery.cells] if gallery else [])
    rank_zero_info(f"HTML report written to {path}")
    return path


def write_predict_report(csv_path: str | Path, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
    """``predict.html`` beside the predictions.csv just written; logged to W&B when a W&B logger is on."""
    data = evaluation_data(trainer)
    skipped = len(data.predict_skipped()) if data is not None else 0
    settings = getattr(pl_module, "inference", None)
    threshold = getattr(settings, "review_threshold", None)
    path = write_predict_html(csv_path, skipped, threshold)
    log_html_report(getattr(trainer, "loggers", []), path, [])
    return path
