"""Relabeling the unlabeled pool: predictions and / or label propagation over a network's embeddings.

Shared by self-training (between rounds) and Mean Teacher with label-propagation pseudo-labels (the published
semi-supervised WBC pipeline). One call embeds the whole pool once: under DDP each rank embeds every W-th image,
the shards are gathered, rank 0 propagates labels and selects pseudo-labels, and its result is broadcast, so every
rank holds identical pseudo-labels (label propagation on float features could differ in the last bit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from bloodcls.data.interface import TrainingData
from bloodcls.strategies.backbones import Backbone
from bloodcls.strategies.label_propagation import label_propagation
from bloodcls.strategies.ssl_losses import normalized_entropy, select_pseudo_labels

if TYPE_CHECKING:
    from bloodcls.strategies.base import Classifier

PseudoSource = Literal["model", "propagation", "both"]
Inference = tuple[np.ndarray, np.ndarray, np.ndarray]  # probs (N, K), embeddings (N, D), labels (N,)


@dataclass(frozen=True)
class RelabelSettings:
    """Where pseudo-labels come from and which pass: ``source`` model / propagation / both (mean of the two)."""

    source: PseudoSource = "both"
    confidence_threshold: float = 0.9
    entropy_threshold: float = 1.0
    lp_k: int = 10
    lp_alpha: float = 0.99
    weight_by_certainty: bool = False


def merge_shards(parts: list[tuple[np.ndarray, Inference | None]], n: int) -> Inference:
    """Per-rank ``(positions, arrays)`` -> arrays over positions 0..n-1 in order; every position exactly once."""
    filled = [(pos, arrays) for pos, arrays in parts if arrays is not None and len(pos)]
    positions = np.concatenate([pos for pos, _ in filled]) if filled else np.zeros(0, np.int64)
    if len(positions) != n or not np.array_equal(np.sort(positions), np.arange(n)):
        raise RuntimeError(f"relabeling shards cover {len(np.unique(positions))} of {n} pool positions")
    order = np.argsort(positions, kind="stable")
    merged = tuple(np.concatenate([arrays[i] for _, arrays in filled])[order] for i in range(3))
    return merged[0], merged[1], merged[2]


def select(pool: Inference, labeled: Inference | None, num_classes: int, settings: RelabelSettings) -> dict[str, Any]:
    """Pseudo-labels from the pool's predictions and / or label propagation seeded by the labeled embeddings.

    Returns accepted ``positions`` (in the pool), their ``labels`` and ``weights``, and ``stats``: pool size,
    accepted count, mask ratio, accuracy of the accepted labels (``pseudo_acc``) and of the would-be labels over
    the whole pool (``pool_acc``) where the pool's truth is known (benchmarks; -1 elsewhere), correct accepted.
    """
    probs_model, emb_pool, truth = pool
    probs = probs_model
    if settings.source != "model":
        if labeled is None:
            raise ValueError("label propagation needs the labeled images' embeddings")
        _, emb_labeled, labels = labeled
        features = np.concatenate([emb_labeled, emb_pool])
        graph_labels = np.concatenate([labels, np.full(len(emb_pool), -1)])
        lp_probs, _ = label_propagation(features, graph_labels, num_classes, k=settings.lp_k, alpha=settings.lp_alpha)
        lp_pool = lp_probs[len(labels) :]
        probs = lp_pool if settings.source == "propagation" else 0.5 * (probs_model + lp_pool)
    probs_t = torch.as_tensor(probs, dtype=torch.float32)
    pseudo, mask = select_pseudo_labels(probs_t, settings.confidence_threshold, settings.entropy_threshold)
    entropy = normalized_entropy(probs_t)  # (N,)
    weights = (1.0 - entropy).clamp(0, 1) if settings.weight_by_certainty else torch.ones_like(entropy)
    accepted = mask.numpy()
    correct = pseudo.numpy() == truth
    known = accepted & (truth >= 0)
    stats = {
        "pool": len(truth),
        "accepted": int(accepted.sum()),
        "mask_ratio": float(accepted.mean()) if len(truth) else 0.0,
        "pseudo_acc": float(correct[known].mean()) if known.any() else float("nan"),
        "pool_acc": float(correct[truth >= 0].mean()) if (truth >= 0).any() else float("nan"),
        "accepted_correct": int(correct[known].sum()),
    }
    return {
        "positions": np.flatnonzero(accepted),
        "labels": pseudo.numpy()[accepted],
        "weights": weights.numpy()[accepted],
        "stats": stats,
    }


def empty_result() -> dict[str, Any]:
    """What relabeling an empty pool returns."""
    empty = np.zeros(0, np.int64)
    nan = float("nan")
    stats = {"pool": 0, "accepted": 0, "mask_ratio": 0.0, "pseudo_acc": nan, "pool_acc": nan, "accepted_correct": 0}
    return {"positions": empty, "labels": empty, "weights": empty.astype(np.float32), "stats": stats}


@torch.no_grad()
def relabel_pool(module: Classifier, net: Backbone, data: TrainingData, settings: RelabelSettings) -> dict[str, Any]:
    """Relabel the data's whole unlabeled pool with ``net`` (a module's backbone, or its EMA teacher).

    ``module`` supplies ``preprocess``, ``device``, ``num_classes`` and its trainer. The result is the same on every
    rank: under DDP this is a collective call that every rank must make.
    """
    pool = data.unlabeled_dataset()
    if _size(pool) == 0:
        return empty_result()
    was_training = net.training
    net.eval()
    try:
        pool_arrays = _infer_all(module, net, data, pool, "true_label")
        labeled_arrays = (
            _infer_all(module, net, data, data.labeled_dataset(), "label") if settings.source != "model" else None
        )
    finally:
        net.train(was_training)
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return select(pool_arrays, labeled_arrays, module.num_classes, settings)
    result: Any = select(pool_arrays, labeled_arrays, module.num_classes, settings) if trainer.is_global_zero else None
    return trainer.strategy.broadcast(result, src=0)


def _size(dataset: Dataset[Any]) -> int:
    assert isinstance(dataset, Sized), "relabeling needs a map-style dataset with a length"
    return len(dataset)


def _infer_all(
    module: Classifier, net: Backbone, data: TrainingData, dataset: Dataset[Any], label_key: str
) -> Inference:
    """Probabilities, embeddings and labels of every item of ``dataset``, in order, on every rank; under DDP each
    rank infers every W-th item and the shards are gathered, so the pool is embedded once in all."""
    trainer = module._trainer
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    if world == 1 or not dist.is_available() or not dist.is_initialized():
        arrays = _infer(module, net, data.eval_loader(dataset), label_key)
        assert arrays is not None, "relabeling needs a non-empty dataset"
        return arrays
    n = _size(dataset)
    positions = np.arange(rank, n, world)
    local = _infer(module, net, data.eval_loader(Subset(dataset, positions.tolist())), label_key)
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (positions, local))
    return merge_shards(parts, n)


def _infer(module: Classifier, net: Backbone, loader: Iterable[dict[str, Any]], label_key: str) -> Inference | None:
    probs, embeddings, labels = [], [], []
    for batch in loader:
        images = batch["image"].to(module.device)
        feats = net.forward_features(module.preprocess(images))
        emb = net.forward_head(feats, pre_logits=True)  # (B, D)
        logits = net.forward_head(feats)  # (B, K)
        probs.append(logits.float().softmax(dim=1).cpu())
        embeddings.append(emb.float().cpu())
        labels.append(batch[label_key].cpu())
    if not probs:
        return None
    return torch.cat(probs).numpy(), torch.cat(embeddings).numpy(), torch.cat(labels).numpy()
