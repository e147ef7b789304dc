"""Self-training in rounds with pseudo-labels from the model, from label propagation, or both.

Round 0 trains on the labeled images. At the end of each round the unlabeled pool is relabeled -- by the
model's predictions, by label propagation over a k-NN graph of its embeddings with the labeled nodes clamped
(Iscen et al., CVPR 2019), or by both averaged -- and pseudo-labels passing the confidence and entropy
thresholds join training: each batch keeps the ``batch_size`` labeled images of round 0 and adds pseudo-labeled
ones so that ``labeled_ratio`` of it is labeled (the semi-supervised WBC recipe: half / half) -- every round, like
every other strategy, presents the same labeled images per step, the pseudo-labeled ones are extra compute. They
are drawn with the balanced sampler because accepted pseudo-labels are class-imbalanced. Rounds stop at
``max_rounds`` or when the validation metric has not improved for ``patience`` rounds. The relabeling runs in a
callback (``bloodcls.callbacks.self_training_rounds``) that hands the labels to the data, which rebuilds its
loaders: the datamodule owns datasets, the strategy owns the model.

Relabeling (``bloodcls.strategies.relabeling``) embeds the pool once per round, also under DDP, and every rank
trains on identical pseudo-labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from bloodcls.strategies.backbones import backbone
from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.losses import cosine_restarts
from bloodcls.strategies.relabeling import PseudoSource, RelabelSettings, relabel_pool
from bloodcls.strategies.ssl_losses import masked_cross_entropy, pseudo_label_stats, warn_if_entropy_filter_is_idle


class SelfTraining(Classifier):
    """Args:
    pseudo_label_source: ``model``, ``propagation`` or ``both`` (mean of the two distributions).
    confidence_threshold, entropy_threshold: pseudo-label filters (entropy normalised by log K; 1.0 = off).
    labeled_ratio: labeled share of each batch of rounds >= 1 (``batch_size`` labeled + the pseudo-labeled rest).
    epochs_per_round: training epochs per round.
    lr_restarts: with ``lr_schedule: cosine``, restart the cosine every round (SGDR: every round ends at a low LR)
        or, ``False``, run one cosine over ``max_epochs`` across the rounds (no return to the peak LR; only the
        last round ends converged).
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
        lr_restarts: bool = True,
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
        self.lr_restarts = lr_restarts
        self.max_rounds = max_rounds
        self.patience = patience
        self.monitor = monitor
        self.lp_k = lp_k
        self.lp_alpha = lp_alpha
        self.weight_by_certainty = weight_by_certainty
        warn_if_entropy_filter_is_idle(confidence_threshold, entropy_threshold, self.num_classes, "SelfTraining")

    def configure_callbacks(self) -> list[Callback]:
        # Imported here: bloodcls.callbacks may import strategies, and strategies are imported first.
        from bloodcls.callbacks.self_training_rounds import SelfTrainingRounds

        return [SelfTrainingRounds()]

    def lr_multiplier(self, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
        if not self.lr_restarts:
            # One schedule over all rounds: in the label-efficiency benchmark each restart to the peak LR cost 6-15
            # points of validation accuracy that the next short round did not win back.
            return super().lr_multiplier(total_steps, warmup_steps)
        # Each round is a training run of its own on new pseudo-labels: the cosine restarts every round, so every
        # round ends converged (low LR) -- the model that relabels the pool and that patience judges.
        epochs = max(1, int(self.trainer.max_epochs or 1))
        period = max(1, round(total_steps * self.epochs_per_round / epochs))
        return lambda step: cosine_restarts(step, period, warmup_steps)

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput | None:
        if "pseudo_label" not in batch:
            return None
        logits = self(batch["image"])
        loss = masked_cross_entropy(logits, batch["pseudo_label"], batch["weight"])  # per-sample weights as the mask
        mask = torch.ones_like(batch["pseudo_label"], dtype=torch.bool)
        stats = pseudo_label_stats(batch["pseudo_label"], mask, batch.get("true_label"), self.class_names)
        stats.pop("mask_ratio")  # every image here was accepted; the round-level ratio is logged by the callback
        return UnlabeledOutput(loss, 1.0, stats)

    def relabel(self) -> dict[str, Any]:
        """Relabel the whole unlabeled pool with the evaluation network (the EMA copy under ``ema_eval``, the
        network that validation and patience judge): accepted positions, labels, weights and statistics -- the
        same on every rank (under DDP a collective call: every rank must make it)."""
        settings = RelabelSettings(
            self.pseudo_label_source,
            self.confidence_threshold,
            self.entropy_threshold,
            self.lp_k,
            self.lp_alpha,
            self.weight_by_certainty,
        )
        return relabel_pool(self, backbone(self.eval_network()), self.training_data(), settings)
