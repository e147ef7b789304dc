"""Integration on the real PBC dataset (skipped when ../shared/datasets/pbc is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from bloodcls.callbacks.reports import TestReport
from bloodcls.data import BloodCellDataModule
from bloodcls.data.cache import hash_files
from bloodcls.data.sources import list_image_folder
from bloodcls.data.splits import deduplicate
from bloodcls.strategies import Supervised

# Real data: hashing ~17,000 images and a fit on a PBC subset take far longer than the fast tier allows.
pytestmark = pytest.mark.slow

PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def test_pbc_duplicates_and_the_cross_class_conflict(pbc_root: Path) -> None:
    listing = list_image_folder(pbc_root)
    assert listing.class_names == PBC_CLASSES and len(listing.ids) >= 14_000
    hashes, errors = hash_files(listing.ids, workers=2)
    assert not errors
    result = deduplicate(hashes, listing.labels)
    assert len(result.groups) == 17 and sum(len(g) for g in result.groups) == 34
    assert len(result.conflicts) == 1
    names = sorted(Path(listing.ids[i]).name for i in result.conflicts[0])
    assert names == ["BNE_191112.jpg", "EO_225902.jpg"]


def test_pbc_subset_trains_and_reports(pbc_root: Path, tmp_path: Path) -> None:
    # A small stratified subset (25 images per class) through a CSV manifest, 32 px, a tiny CNN, one epoch.
    rows = ["path,label"]
    for name in PBC_CLASSES:
        files = sorted((pbc_root / name).glob("*.jpg"))[:25]
        rows += [f"{f},{name}" for f in files]
    manifest = tmp_path / "pbc_subset.csv"
    manifest.write_text("\n".join(rows) + "\n")
    dm = BloodCellDataModule(
        root=str(manifest),
        image_size=32,
        batch_size=32,
        num_workers=0,
        cache="disk",
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    model = Supervised(num_classes=dm.num_classes, class_names=dm.class_names, backbone="bloodcls_cnn_tiny")
    report = TestReport(output_dir=str(tmp_path / "report"), print_table=False)
    trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[report],
        enable_checkpointing=False,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["n"] == 8 * 5 and len(metrics["per_class"]) == 8
    assert np.isfinite(metrics["balanced_acc"]) and metrics["run"]["data"]["n_usable"] == 200
