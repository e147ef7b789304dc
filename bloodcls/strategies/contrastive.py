"""Contrastive pretraining: SimCLR's NT-Xent on the unlabeled pool (Chen et al., ICML 2020) and supervised
contrastive SupCon on the labeled set (Khosla et al., NeurIPS 2020), with a linear-probe evaluation.

It produces a backbone that any strategy can start from (``--model.init_args.backbone_checkpoint``). Model
selection uses a logistic-regression probe on frozen embeddings of the labeled training images, scored on
the validation split, so ``val/balanced_acc`` means the same thing here as for every other strategy.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from torch import nn

from bloodcls.data.interface import LoaderRequest
from bloodcls.distributed import gather_rows
from bloodcls.errors import UserInputError
from bloodcls.strategies.backbones import backbone
from bloodcls.strategies.base import Batch, Classifier
from bloodcls.strategies.ssl_losses import nt_xent, supcon


class ContrastivePretrain(Classifier):
    """Args:
    mode: ``simclr`` (unlabeled pool), ``supcon`` (labeled set) or ``both`` (summed).
    temperature: NT-Xent temperature; supcon_temperature: SupCon temperature.
    projection_dim: output size of the 2-layer projection head (discarded after pretraining).
    supcon_weight: weight of the SupCon term in ``both``.
    probe_max_iter: iterations of the logistic-regression linear probe.
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, ...).
    """

    pretraining: ClassVar[bool] = True

    def __init__(
        self,
        mode: Literal["simclr", "supcon", "both"] = "both",
        temperature: float = 0.5,
        supcon_temperature: float = 0.1,
        projection_dim: int = 128,
        supcon_weight: float = 1.0,
        probe_max_iter: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.temperature = temperature
        self.supcon_temperature = supcon_temperature
        self.supcon_weight = supcon_weight
        self.probe_max_iter = probe_max_iter
        width = int(backbone(self.net).num_features)
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim))
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._val_index: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:  # test, predict and export all evaluate through forward
            raise UserInputError(
                "a ContrastivePretrain checkpoint has no trained classifier head: fine-tune it first with any "
                "strategy and --model.init_args.backbone_checkpoint <this checkpoint>, then test / predict / export"
            )
        return super().forward(images)

    def _project(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.embed(images))  # (B, projection_dim)

    def loader_request(self) -> LoaderRequest:
        views: dict[str, str | None] = {"image_a": "strong", "image_b": "strong"}
        return LoaderRequest(labeled_views=views, unlabeled_views=views if self.mode in ("simclr", "both") else None)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        labeled: Batch = batch["labeled"] if "labeled" in batch else batch
        total = torch.zeros((), device=self.device)
        if self.mode in ("supcon", "both"):
            feats = torch.stack([self._project(labeled["image_a"]), self._project(labeled["image_b"])], dim=1)
            loss_supcon = supcon(feats, labeled["label"], self.supcon_temperature)
            self.log("train/loss_sup", loss_supcon, batch_size=len(feats))
            total = total + self.supcon_weight * loss_supcon
        if self.mode in ("simclr", "both") and "unlabeled" in batch:
            unl = batch["unlabeled"]
            loss_nt = nt_xent(self._project(unl["image_a"]), self._project(unl["image_b"]), self.temperature)
            self.log("train/loss_unsup", loss_nt, batch_size=len(unl["image_a"]))
            total = total + loss_nt
        self.log("train/loss", total, prog_bar=True)
        # The classifier head takes no part in pretraining; DDP refuses parameters without a gradient, so it gets an
        # exact zero one (keeps `--trainer.strategy ddp` working without find_unused_parameters).
        head = [p for p in backbone(self.net).get_classifier().parameters() if p.requires_grad]
        return total + 0.0 * sum(p.sum() for p in head) if head else total

    # ------------------------------------------------------------------ linear probe
    def _probe_scores(self, eval_emb: np.ndarray, eval_labels: np.ndarray) -> dict[str, float]:
        data = self.training_data()
        train_emb, train_labels = [], []
        with torch.no_grad():
            for b in data.eval_loader(data.labeled_dataset()):
                train_emb.append(self.embed(b["image"].to(self.device)).float().cpu())
                train_labels.append(b["label"])
        x, y = torch.cat(train_emb).numpy(), torch.cat(train_labels).numpy()
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        probe = LogisticRegression(max_iter=self.probe_max_iter)
        probe.fit((x - mean) / std, y)
        pred = probe.predict((eval_emb - mean) / std)
        return {
            "acc": float((pred == eval_labels).mean()),
            "balanced_acc": float(balanced_accuracy_score(eval_labels, pred)),
            "macro_f1": float(f1_score(eval_labels, pred, average="macro")),
        }

    validates_with_eval_probabilities = False  # a linear probe on embeddings: no TTA, no ensemble members

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._val_embeddings.append(self.embed(batch["image"]).float().cpu())
        self._val_labels.append(batch["label"].cpu())
        self._val_index.append(batch["index"].cpu())

    def on_validation_epoch_end(self) -> None:
        local = (
            {
                "emb": torch.cat(self._val_embeddings),
                "label": torch.cat(self._val_labels),
                "index": torch.cat(self._val_index),
            }
            if self._val_embeddings
            else None
        )
        self._val_embeddings, self._val_labels, self._val_index = [], [], []
        if self._trainer is None or self.trainer.sanity_checking:
            return
        # Under DDP each rank embedded a shard of the validation set: rank 0 probes all of it and shares the scores.
        rows = gather_rows(self.trainer, local)
        scores: Any = None
        if rows is not None and self.trainer.is_global_zero:
            scores = self._probe_scores(rows["emb"].numpy(), rows["label"].numpy())
        scores = self.trainer.strategy.broadcast(scores, src=0)
        if scores is None:
            return
        # Identical on every rank (broadcast); sync_dist only tells Lightning so (the mean of equal values).
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=True, sync_dist=True)
