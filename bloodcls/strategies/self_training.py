"""Self-training in rounds with pseudo-labels from the model, from label propagation, or both.

Round 0 trains on the labeled images. At the end of each round the unlabeled pool is relabeled -- by the
model's predictions, by label propagation over a k-NN graph of its embeddings with the labeled nodes clamped
(Iscen et al., CVPR 2019), or by both averaged -- and pseudo-labels passing the confidence and entropy
thresholds join training: each batch holds ``labeled_ratio`` labeled images and the rest pseudo-labeled ones,
drawn with the balanced sampler because accepted pseudo-labels are class-imbalanced (the semi-supervised WBC
recipe: half / half, batch 40). Rounds stop at ``max_rounds`` or when the validation metric has not improved
for ``patience`` rounds. The relabeling runs in a callback that hands the labels to the datamodule, which
rebuilds its loaders: the datamodule owns datasets, the strategy owns the model.

Under DDP a relabeling pass covers the whole pool once: each rank embeds every W-th image, the shards are
gathered, rank 0 propagates labels and selects pseudo-labels, and its result is broadcast, so every rank trains
on identical pseudo-labels (label propagation on float features could differ in the last bit between ranks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Subset

from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.label_propagation import label_propagation
from bloodcls.strategies.losses import cosine_restarts
from bloodcls.strategies.ssl_losses import select_pseudo_labels

PseudoSource = Literal["model", "propagation", "both"]
Inference = tuple[np.ndarray, np.ndarray, np.ndarray]  # probs (N, K), embeddings (N, D), labels (N,)


def merge_shards(parts: list[tuple[np.ndarray, Inference | None]], n: int) -> Inference:
    """Per-rank ``(positions, arrays)`` -> arrays over positions 0..n-1 in order; every position exactly once."""
    filled = [(pos, arrays) for pos, arrays in parts if arrays is not None and len(pos)]
    positions = np.concatenate([pos for pos, _ in filled]) if filled else np.zeros(0, np.int64)
    if len(positions) != n or not np.array_equal(np.sort(positions), np.arange(n)):
        raise RuntimeError(f"relabeling shards cover {len(np.unique(positions))} of {n} pool positions")
    order = np.argsort(positions, kind="stable")
    merged = tuple(np.concatenate([arrays[i] for _, arrays in filled])[order] for i in range(3))
    return merged[0], merged[1], merged[2]


class SelfTraining(Classifier):
    """Args:
    pseudo_label_source: ``model``, ``propagation`` or ``both`` (mean of the two distributions).
    confidence_threshold, entropy_threshold: pseudo-label filters (entropy normalised by log K; 1.0 = off).
    labeled_ratio: share of labeled images in each batch of rounds >= 1.
    epochs_per_round: training epochs per round; with ``lr_schedule: cosine`` the cosine restarts every round.
    max_rounds: rounds after round 0.
    patience: stop when the monitored validation metric has not improved for this many rounds.
    monitor: the validation metric that decides rounds.
    lp_k, lp_alpha: k-NN graph size and diffusion strength of label propagation.
    weight_by_certainty: weight pseudo-labeled samples by 1 - normalised entropy of their label distribution.
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    def __init__(
        self,
        pseudo_label_source: PseudoSource = "both",
        confidence_threshold: float = 0.9,
        entropy_threshold: float = 1.0,
        labeled_ratio: float = 0.5,
        epochs_per_round: int = 5,
        max_rounds: int = 4,
        patience: int = 1,
        monitor: str = "val/balanced_acc",
        lp_k: int = 10,
        lp_alpha: float = 0.99,
        weight_by_certainty: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pseudo_label_source = pseudo_label_source
        self.confidence_threshold = confidence_threshold
        self.entropy_threshold = entropy_threshold
        self.labeled_ratio = labeled_ratio
        self.epochs_per_round = epochs_per_round
        self.max_rounds = max_rounds
        self.patience = patience
        self.monitor = monitor
        self.lp_k = lp_k
        self.lp_alpha = lp_alpha
        self.weight_by_certainty = weight_by_certainty

    def configure_callbacks(self) -> list[Callback]:
        return [SelfTrainingRounds()]

    def lr_multiplier(self, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
        # Each round is a training run of its own on new pseudo-labels: the cosine restarts every round, so every
        # round ends converged (low LR) -- the model that relabels the pool and that patience judges.
        epochs = max(1, int(self.trainer.max_epochs or 1))
        period = max(1, round(total_steps * self.epochs_per_round / epochs))
        return lambda step: cosine_restarts(step, period, warmup_steps)

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput | None:
        if "pseudo_label" not in batch:
            return None
        logits = self(batch["image"])
        per_sample = F.cross_entropy(logits, batch["pseudo_label"], reduction="none")
        loss = (per_sample * batch["weight"]).mean()
        mask = torch.ones_like(batch["pseudo_label"], dtype=torch.bool)
        stats = self.pseudo_label_stats(batch["pseudo_label"], mask, batch.get("true_label"))
        stats.pop("mask_ratio")  # every image here was accepted; the round-level ratio is logged by the callback
        return UnlabeledOutput(loss, 1.0, stats)

    @torch.no_grad()
    def relabel(self, datamodule: Any) -> dict[str, Any]:
        """Predict the whole unlabeled pool; return accepted positions, labels, weights and statistics -- the same
        on every rank (under DDP a collective call: every rank must make it)."""
        pool = datamodule.unlabeled_dataset()
        if len(pool) == 0:
            empty = np.zeros(0, np.int64)
            nan = float("nan")
            stats = {
                "pool": 0,
                "accepted": 0,
                "mask_ratio": 0.0,
                "pseudo_acc": nan,
                "pool_acc": nan,
                "accepted_correct": 0,
            }
            return {"positions": empty, "labels": empty, "weights": empty.astype(np.float32), "stats": stats}
        was_training = self.training
        self.eval()
        pool_arrays = self._infer_all(datamodule, pool, "true_label")
        needs_labeled = self.pseudo_label_source in ("propagation", "both")
        labeled_arrays = self._infer_all(datamodule, datamodule.labeled_dataset(), "label") if needs_labeled else None
        self.train(was_training)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            result: Any = self._select(pool_arrays, labeled_arrays) if trainer.is_global_zero else None
            return trainer.strategy.broadcast(result, src=0)
        return self._select(pool_arrays, labeled_arrays)

    def _select(self, pool_arrays: Inference, labeled_arrays: Inference | None) -> dict[str, Any]:
        """Pseudo-labels from the pool's predictions (and label propagation from the labeled embeddings)."""
        probs_model, emb_pool, truth = pool_arrays
        probs = probs_model
        if labeled_arrays is not None:
            _, emb_labeled, labels = labeled_arrays
            features = np.concatenate([emb_labeled, emb_pool])
            graph_labels = np.concatenate([labels, np.full(len(emb_pool), -1)])
            lp_probs, _ = label_propagation(features, graph_labels, self.num_classes, k=self.lp_k, alpha=self.lp_alpha)
            lp_pool = lp_probs[len(labels) :]
            probs = lp_pool if self.pseudo_label_source == "propagation" else 0.5 * (probs_model + lp_pool)
        probs_t = torch.as_tensor(probs, dtype=torch.float32)
        pseudo, mask = select_pseudo_labels(probs_t, self.confidence_threshold, self.entropy_threshold)
        entropy = -(probs_t * probs_t.clamp_min(1e-12).log()).sum(dim=1) / np.log(self.num_classes)
        weights = (1.0 - entropy).clamp(0, 1) if self.weight_by_certainty else torch.ones_like(entropy)
        accepted = mask.numpy()
        correct = pseudo.numpy() == truth  # only meaningful where the pool's truth is known (benchmarks)
        known = accepted & (truth >= 0)
        stats = {
            "pool": len(truth),
            "accepted": int(accepted.sum()),
            "mask_ratio": float(accepted.mean()) if len(truth) else 0.0,
            # accuracy of the accepted pseudo-labels, and of the would-be labels over the whole pool
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

    def _infer_all(self, datamodule: Any, dataset: Any, label_key: str) -> Inference:
        """Probabilities, embeddings and labels of every item of ``dataset``, in order, on every rank. Under DDP
        each rank infers every W-th item and the shards are gathered, so the pool is embedded once in all."""
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if world == 1 or not dist.is_available() or not dist.is_initialized():
            arrays = self._infer(datamodule.eval_loader(dataset), label_key)
            assert arrays is not None, "relabeling needs a non-empty dataset"
            return arrays
        positions = np.arange(rank, len(dataset), world)
        local = self._infer(datamodule.eval_loader(Subset(dataset, positions.tolist())), label_key)
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (positions, local))
        return merge_shards(parts, len(dataset))

    def _infer(self, loader: Any, label_key: str) -> Inference | None:
        probs, embeddings, labels = [], [], []
        for batch in loader:
            images = batch["image"].to(self.device)
            feats = self.net.forward_features(self.preprocess(images))
            emb = self.net.forward_head(feats, pre_logits=True)  # (B, D)
            logits = self.net.forward_head(feats)  # (B, K)
            probs.append(logits.float().softmax(dim=1).cpu())
            embeddings.append(emb.float().cpu())
            labels.append(batch[label_key].cpu())
        if not probs:
            return None
        return torch.cat(probs).numpy(), torch.cat(embeddings).numpy(), torch.cat(labels).numpy()


class SelfTrainingRounds(Callback):
    """Runs the rounds of a ``SelfTraining`` module: relabel at each round end, stop on patience / max."""

    def __init__(self) -> None:
        self.round = 0
        self.best: float | None = None
        self.stale = 0
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # New pseudo-labels mean new loaders; reloading each epoch is cheap with the decoded cache.
        trainer.reload_dataloaders_every_n_epochs = 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, SelfTraining)
        if (trainer.current_epoch + 1) % pl_module.epochs_per_round != 0:
            return
        score = trainer.callback_metrics.get(pl_module.monitor)
        value = float(score) if score is not None else None
        if value is not None and (self.best is None or value > self.best):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        if self.round >= pl_module.max_rounds or self.stale >= pl_module.patience:
            rank_zero_info(f"self-training: stopping after round {self.round} ({pl_module.monitor} best {self.best})")
            trainer.should_stop = True
            return
        result = pl_module.relabel(trainer.datamodule)  # identical on every rank (rank 0's, broadcast)
        trainer.datamodule.set_pseudo_labels(
            result["positions"], result["labels"], result["weights"], labeled_ratio=pl_module.labeled_ratio
        )
        self.round += 1
        stats = result["stats"]
        self.history.append({"round": self.round, **stats, "val": value})
        pl_module.log_dict(
            {
                "round/index": float(self.round),
                "round/mask_ratio": stats["mask_ratio"],
                "round/accepted": float(stats["accepted"]),
                "round/pseudo_acc": stats["pseudo_acc"],
                "round/pool_acc": stats["pool_acc"],
            },
            sync_dist=True,  # identical on every rank (broadcast): the mean changes nothing, and Lightning knows
        )
        counts = np.bincount(result["labels"], minlength=pl_module.num_classes)
        rank_zero_info(
            f"self-training round {self.round}: accepted {stats['accepted']}/{stats['pool']} "
            f"(mask ratio {stats['mask_ratio']:.3f}, pseudo-label accuracy {stats['pseudo_acc']:.3f}); per class "
            + ", ".join(f"{n} {c}" for n, c in zip(pl_module.class_names, counts.tolist(), strict=True))
        )

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "best": self.best, "stale": self.stale, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.best = state_dict["best"]
        self.stale = state_dict["stale"]
        self.history = state_dict["history"]
