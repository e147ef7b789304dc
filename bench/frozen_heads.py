"""Frozen-backbone heads on PBC at few labels per class: embed every image once (through the embedding cache), then
per (head, labels per class, seed) cell fit the head on the labeled embeddings of that cell's split -- the split and
budget ``bloodcls fit`` uses for the same ``labels_per_class`` / ``split_seed`` / ``val_per_class`` -- and score it on
the test split's cached embeddings. Nothing is chosen on the test split (the heads' knobs are their defaults).

    OMP_NUM_THREADS=1 python bench/frozen_heads.py --ckpt RUN/checkpoints/best.ckpt --root ../shared/datasets/pbc \
        --budgets 10 20 50 100 --seeds 0 1 2 --out bench/results/frozen_heads
    python bench/frozen_heads.py --backbone bloodcls_cnn_small ...   # a random-init backbone: no prior at all
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from bloodcls.data import BloodCellDataModule
from bloodcls.data import splits as S
from bloodcls.embeddings import heads as H
from bloodcls.embeddings.extract import embed_dataset, embedding_identity
from bloodcls.embeddings.store import EmbeddingStore, default_embedding_dir

COLUMNS = ("backbone", "head", "labels_per_class", "seed", "acc", "balanced_acc", "macro_f1", "n_test", "wall_s")


def datamodule(
    args: argparse.Namespace, budget: int | None, seed: int, val_per_class: int | None = 20
) -> BloodCellDataModule:
    """The split of configs/pbc/label_efficiency_64px.yaml at ``budget`` labels per class (``split_seed`` = seed)."""
    return BloodCellDataModule(
        root=args.root, image_size=args.image_size, val_per_class=val_per_class, labels_per_class=budget,
        split_seed=seed,
        cache="disk", num_workers=0, eval_batch_size=256,
    )  # fmt: skip


def model_of(args: argparse.Namespace, num_classes: int) -> Any:
    if args.ckpt:
        from bloodcls.commands.export import load_classifier

        return load_classifier(Path(args.ckpt))
    import torch

    from bloodcls.strategies.base import Classifier

    torch.manual_seed(0)
    return Classifier(num_classes=num_classes, backbone=args.backbone).eval()


def embed_all(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, float]:
    """Embeddings and labels of every usable listed row, and the embedding seconds. No val cap here: a capped
    validation split would leave its other rows (test rows of other seeds) unembedded."""
    dm = datamodule(args, None, 0, val_per_class=None)
    model = model_of(args, dm.num_classes)
    store = EmbeddingStore(
        args.cache_dir or default_embedding_dir(), embedding_identity(model.net, model.mean, model.std, "none")
    )
    start = time.perf_counter()
    matrix: np.ndarray | None = None
    for split in (S.TRAIN, S.VAL, S.TEST):  # every usable row: deduplicated copies alone are excluded
        dataset = dm._dataset(split, dm.eval_views)  # noqa: SLF001
        emb, _, _ = embed_dataset(model.embed, dm.eval_loader(dataset), store)
        if matrix is None:
            matrix = np.zeros((len(dm.subsets), emb.shape[1]), dtype=np.float32)
        matrix[dataset.rows] = emb
    assert matrix is not None
    return matrix, dm.data.listing.labels, time.perf_counter() - start


def fit_head(head: str, x: np.ndarray, y: np.ndarray, pool: np.ndarray, k: int) -> Any:
    if head == "linear":
        return H.fit_linear(x, y, k, C=1.0, max_iter=1000)
    if head == "knn":
        return H.fit_knn(x, y, k, k=20, gamma=1.0)
    if head == "label_propagation":
        return H.fit_label_propagation(x, y, pool, k, k=10, alpha=0.99, gamma=3.0)
    return H.fit_mlp(x, y, k, hidden=256, epochs=100, lr=1e-3, weight_decay=1e-4)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ckpt", help="a bloodcls checkpoint whose backbone is frozen")
    group.add_argument("--backbone", help="a randomly initialised architecture (seed 0) instead")
    parser.add_argument("--name", default=None, help="backbone label in the table")
    parser.add_argument("--root", required=True)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--heads", nargs="+", default=["linear", "knn", "label_propagation", "mlp"])
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/frozen_heads"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    name = args.name or (Path(args.ckpt).parts[-4] if args.ckpt else f"{args.backbone} (random init)")
    features, labels, embed_s = embed_all(args)
    print(f"embedded {len(features)} images in {embed_s:.1f} s")
    rows: list[dict[str, Any]] = []
    for budget in args.budgets:
        for seed in args.seeds:
            subsets = datamodule(args, budget, seed).subsets
            train, pool, test = (np.flatnonzero(subsets == s) for s in (S.TRAIN, S.UNLABELED, S.TEST))
            assert np.abs(features[np.concatenate([train, pool, test])]).sum(axis=1).all(), "an unembedded row"
            num_classes = int(labels.max()) + 1
            for head in args.heads:
                torch.manual_seed(seed)
                start = time.perf_counter()
                module = fit_head(head, features[train], labels[train], features[pool], num_classes)
                with torch.no_grad():
                    pred = module(torch.as_tensor(features[test])).argmax(dim=1).numpy()
                wall = time.perf_counter() - start
                truth = labels[test]
                row = {
                    "backbone": name, "head": head, "labels_per_class": budget, "seed": seed,
                    "acc": float((pred == truth).mean()), "balanced_acc": float(balanced_accuracy_score(truth, pred)),
                    "macro_f1": float(f1_score(truth, pred, average="macro")), "n_test": len(test), "wall_s": wall,
                }  # fmt: skip
                rows.append(row)
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = name.replace(" ", "_").replace("(", "").replace(")", "")
    with (args.out / f"{stem}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"| backbone | head | labels/class | balanced acc (mean ± std over seeds) | wall s / cell |"
        f"  (embedding: {embed_s:.0f} s)"
    )
    for head in args.heads:
        for budget in args.budgets:
            cell = [r for r in rows if r["head"] == head and r["labels_per_class"] == budget]
            b = 100 * np.array([r["balanced_acc"] for r in cell])
            w = np.mean([r["wall_s"] for r in cell])
            print(f"| {name} | {head} | {budget} | {b.mean():.1f} ± {b.std():.1f} (n={len(b)}) | {w:.2f} |")


if __name__ == "__main__":
    main()
