"""``bloodcls embed``'s work: a frozen backbone (from a run's checkpoint, or a named architecture with local weights)
over the splits of a dataset, through the embedding cache, written out as ``embeddings.npy`` + ``rows.csv``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcls.data import splits as S
from bloodcls.embeddings.extract import embed_dataset, embedding_identity
from bloodcls.embeddings.store import EmbeddingDtype, EmbeddingStore, default_embedding_dir
from bloodcls.errors import UserInputError
from bloodcls.io import write_csv, write_json

SPLITS = (S.TRAIN, S.UNLABELED, S.VAL, S.TEST)


@dataclass
class EmbedResult:
    """What one ``bloodcls embed`` wrote and how much of it the cache already held."""

    output: Path
    n_rows: int
    n_new: int
    width: int
    cache: Path


def chosen_splits(subsets: np.ndarray, wanted: list[str] | None) -> list[str]:
    """``wanted`` (default: every split the run has), or a one-line error for a split it does not have."""
    present = [s for s in SPLITS if np.any(subsets == s)]
    for split in wanted or []:
        if split not in SPLITS:
            raise UserInputError(f"--splits {split}: unknown split (expected some of: {', '.join(SPLITS)})")
        if split not in present:
            raise UserInputError(f"--splits {split}: this run has no {split} split (it has: {', '.join(present)})")
    return list(wanted) if wanted else present


def embed_splits(
    model: Any,
    datamodule: Any,
    output: Path,
    splits: list[str] | None = None,
    tta: str = "none",
    cache_dir: str | Path | None = None,
    dtype: EmbeddingDtype = "float16",
) -> EmbedResult:
    """Embed the rows of ``splits`` with ``model`` (a bloodcls ``Classifier``: its backbone and normalisation) and
    write ``embeddings.npy`` (N, D), ``rows.csv`` (file, hash, label, subset) and ``identity.json`` to ``output``."""
    model = model.eval()
    subsets = datamodule.subsets
    chosen = chosen_splits(subsets, splits)
    identity = embedding_identity(model.eval_network(), model.mean, model.std, tta)  # the network embed() uses
    store = EmbeddingStore(cache_dir or default_embedding_dir(), identity, dtype)
    before = len(store)
    ids, names = datamodule.sample_ids(), datamodule.class_names
    features: list[np.ndarray] = []
    rows: list[list[Any]] = []
    for split in chosen:
        dataset = datamodule._dataset(split, datamodule.eval_views)  # noqa: SLF001 - any subset, eval views
        loader = datamodule.eval_loader(dataset)
        with torch.no_grad():
            emb, hashes, labels = embed_dataset(model.embed, loader, store, tta)
        features.append(emb)
        for row, h, label in zip(dataset.rows, hashes, labels, strict=True):
            rows.append([ids[int(row)], h, names[int(label)] if label >= 0 else "", split])
    matrix = np.concatenate(features).astype(dtype)
    output.mkdir(parents=True, exist_ok=True)
    np.save(output / "embeddings.npy", matrix)
    write_csv(output / "rows.csv", ("file", "hash", "label", "subset"), rows)
    write_json(output / "identity.json", {**store.identity, "cache_key": store.key, "splits": chosen})
    return EmbedResult(output, len(rows), len(store) - before, int(matrix.shape[1]), store.directory)


def load_embeddings(output: str | Path) -> tuple[np.ndarray, list[dict[str, str]], dict[str, Any]]:
    """An ``embed`` output folder: embeddings (memory-mapped), its rows, and the backbone identity."""
    import csv

    folder = Path(output)
    with (folder / "rows.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    identity = json.loads((folder / "identity.json").read_text())
    return np.load(folder / "embeddings.npy", mmap_mode="r"), rows, identity
