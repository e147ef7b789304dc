"""Callbacks that turn test and predict outputs into files: the test report and predictions.csv.

Under DDP every rank evaluates a shard; the rows are gathered (shards may differ in length), repeats from padding
samplers are dropped by ``index``, and rank 0 writes the files. Each stage first removes its earlier outputs, and
writes its files atomically: what is there after a run is this run's, complete, or nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.callbacks.wandb import log_test_report
from bloodcls.data.interface import evaluation_data
from bloodcls.distributed import gather_rows, run_dir
from bloodcls.errors import UserInputError
from bloodcls.evaluation.cam_gallery import GalleryCollector
from bloodcls.evaluation.html_hooks import write_html_report, write_predict_report
from bloodcls.evaluation.html_predict import PREDICT_HTML
from bloodcls.evaluation.report import clear_report, print_report, write_report
from bloodcls.io import atomic_open, remove_outputs, write_csv

SKIPPED_CSV = "predictions_skipped.csv"
# Which checkpoint(s), TTA and temperature the probabilities came from; written by InferenceOverrides at test /
# predict start beside the report, and copied into metrics.json["inference"] by the test report.
INFERENCE_JSON = "inference.json"
NEEDS_REVIEW = "needs_review"  # predictions.csv column (true / false), present when the checkpoint has a threshold


def _class_names(trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
    names = getattr(pl_module, "class_names", None)
    if names:
        return list(names)
    return [str(i) for i in range(int(getattr(pl_module, "num_classes", 0)))]


class TestReport(Callback):
    """Collects test probabilities and writes the report (metrics.json, per_class.csv, confusion matrix, ROC,
    calibration, per-image predictions, report.html) into ``output_dir`` (default: the test run's log directory).
    ``cam_gallery``: Grad-CAMs of the most confident correct cells and mistakes per class in report.html."""

    def __init__(self, output_dir: str | None = None, print_table: bool = True, cam_gallery: bool = True) -> None:
        self.output_dir = output_dir
        self.print_table = print_table
        self.gallery = GalleryCollector() if cam_gallery else None
        self._outputs: list[dict[str, torch.Tensor]] = []
        self.last_metrics: dict[str, Any] | None = None

    def _out_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else run_dir(trainer)  # every rank: a broadcast

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "test":
            return
        out_dir = self._out_dir(trainer)
        if trainer.is_global_zero:
            clear_report(out_dir)  # a test that fails or evaluates nothing leaves no earlier report looking current

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._outputs = []
        if self.gallery is not None:
            self.gallery.reset()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "probs" in outputs:
            keep = ("probs", "logits", "label", "index")
            self._outputs.append({k: v.detach().cpu() for k, v in outputs.items() if k in keep})
            if self.gallery is not None:
                self.gallery.update(batch, outputs)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        local = {k: torch.cat([o[k] for o in self._outputs]) for k in self._outputs[0]} if self._outputs else None
        # Every rank evaluated a shard; gather so the report covers the whole test split exactly once.
        gathered = gather_rows(trainer, local)
        out_dir = self._out_dir(trainer)
        if gathered is None:  # the same on every rank: gather_rows is collective
            raise UserInputError("test evaluated no images (the test data is empty); no report was written")
        if not trainer.is_global_zero:
            return
        probs, labels, index = gathered["probs"].cpu(), gathered["label"].cpu(), gathered["index"].cpu()
        data = evaluation_data(trainer)
        paths = None
        extra: dict[str, Any] = {"ckpt_path": trainer.ckpt_path}
        if data is not None:
            ids = data.sample_ids()
            paths = [ids[i] for i in index.tolist()]
            report = data.data_report()
            extra["data"] = {k: report[k] for k in ("source", "root", "n_listed", "n_usable", "image_size")}
            extra["data"]["n_skipped"] = len(report["skipped"])
            extra["data"]["n_duplicate_groups"] = len(report["duplicate_groups"])
            extra["data"]["n_label_conflicts"] = len(report["label_conflicts"])
            if "class_map" in report:  # external-lab evaluation: what was mapped, excluded, and not measurable
                extra["data"]["class_map"] = report["class_map"]
        names = _class_names(trainer, pl_module)
        settings = getattr(pl_module, "inference", None)
        if settings is not None:
            extra["inference"] = {k: v for k, v in settings.to_dict().items() if k != "fitted_on"}
        record_file = out_dir / INFERENCE_JSON
        sections = {"inference": json.loads(record_file.read_text())} if record_file.is_file() else None
        # The before / after calibration view compares the model's plain softmax with what it reports; an ensemble's
        # probabilities are not one model's tempered softmax, so it has no "before".
        single = not getattr(pl_module, "ensemble_members", None)
        logits = gathered["logits"].cpu().numpy() if "logits" in gathered and single else None
        metrics = write_report(
            out_dir,
            probs.numpy(),
            labels.numpy(),
            names,
            paths=paths,
            extra=extra,
            logits=logits,
            temperature=settings.temperature if settings is not None else 1.0,
            review_threshold=settings.review_threshold if settings is not None else None,
            sections=sections,
        )
        self.last_metrics = metrics
        log_test_report(trainer.loggers, out_dir, metrics, labels.numpy(), probs.numpy().argmax(axis=1), names)
        if self.print_table:
            print_report(metrics, title=f"Test report ({len(labels)} images)")
        rank_zero_info(f"test report written to {out_dir}")
        write_html_report(out_dir, trainer, pl_module, self.gallery)


class PredictionsCSV(BasePredictionWriter):
    """Writes ``predictions.csv``: path, predicted class, confidence, ``needs_review`` (``true`` when the confidence is
    below the checkpoint's review threshold; the column is there only when the checkpoint has one), one probability
    column per class."""

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.last_path: Path | None = None

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(self.output) if self.output else run_dir(trainer) / "predictions.csv"  # every rank: broadcast

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        path = self._path(trainer)
        if trainer.is_global_zero:
            # A predict that fails or finds nothing to classify leaves no earlier predictions looking current.
            remove_outputs(path, path.with_name(SKIPPED_CSV), path.with_name(PREDICT_HTML))

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        local = (
            {"probs": torch.cat([b["probs"] for b in batches]).cpu(), "index": torch.cat([b["index"] for b in batches])}
            if batches
            else None
        )
        gathered = gather_rows(trainer, local)  # every rank: a collective
        path = self._path(trainer)
        if gathered is None:  # the same on every rank: gather_rows is collective
            raise UserInputError("predict classified no images; no predictions.csv was written")
        if not trainer.is_global_zero:
            return
        probs, index = gathered["probs"].cpu(), gathered["index"].cpu()
        names = _class_names(trainer, pl_module)
        data = evaluation_data(trainer)
        ids = data.predict_paths() if data is not None else [str(i) for i in range(int(index.max()) + 1)]
        settings = getattr(pl_module, "inference", None)
        threshold = settings.review_threshold if settings is not None else None
        # needs_review only where the checkpoint has a referral threshold (bloodcls calibrate --target_accuracy):
        # without one there is no decision to record, and an all-false column would read as "all trusted".
        review = [] if threshold is None else [NEEDS_REVIEW]
        with atomic_open(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "pred", "confidence", *review, *[f"prob_{n}" for n in names]])
            for row, p in zip(index.tolist(), probs, strict=True):  # gather_rows dropped DDP padding repeats
                k = int(p.argmax())
                flag = [] if threshold is None else [str(float(p[k]) < threshold).lower()]
                writer.writerow([ids[row], names[k], f"{float(p[k]):.6f}", *flag, *[f"{float(v):.6f}" for v in p]])
        skipped = data.predict_skipped() if data is not None else []
        if skipped:
            write_csv(path.with_name(SKIPPED_CSV), ["path", "reason"], skipped)
        self.last_path = path
        rank_zero_info(f"predictions for {len(index)} images written to {path}")
        write_predict_report(path, trainer, pl_module)
