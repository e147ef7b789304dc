"""Frozen backbone + light head: the backbone embeds the labeled (and, for label propagation, unlabeled) images once
through the embedding cache, a head is fitted on the embeddings in seconds, and ``forward`` = backbone features ->
head, so validate / test / predict / export / reports treat the run like any other."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from bloodcls.embeddings.extract import embed_dataset, embedding_identity, tta_features
from bloodcls.embeddings.heads import (
    GraphVoteHead,
    LinearHead,
    MLPHead,
    fit_knn,
    fit_label_propagation,
    fit_linear,
    fit_mlp,
)
from bloodcls.embeddings.store import EmbeddingDtype, EmbeddingStore, default_embedding_dir
from bloodcls.errors import UserInputError
from bloodcls.strategies.backbones import backbone
from bloodcls.strategies.base import Classifier

HeadName = Literal["linear", "knn", "label_propagation", "mlp"]


class FrozenHead(Classifier):
    """Args:
    head: ``linear`` (logistic regression, ``C``), ``knn`` (``k``, ``gamma``), ``label_propagation`` over the k-NN
        graph of labeled + unlabeled embeddings (``k``, ``alpha``, ``gamma``), or ``mlp`` (``hidden``,
        ``mlp_epochs``, ``mlp_lr``, ``mlp_weight_decay``; trained on the cached embeddings).
    max_iter: logistic-regression iterations.
    embed_tta: ``d4`` averages the backbone's features over the eight symmetries (at fit and at inference).
    embedding_cache_dir: where embeddings are cached (default ``$BLOODCLS_CACHE/embeddings``);
        embedding_dtype: ``float16`` or ``float32`` storage.
    **kwargs: the ``Classifier`` arguments; ``backbone`` + ``pretrained_weights`` or ``backbone_checkpoint`` name the
        frozen network (the backbone's own classifier is never used).
    """

    # The network never takes a gradient step (the strategy contract's one-step test does not apply).
    trains_backbone: ClassVar[bool] = False

    def __init__(
        self,
        head: HeadName = "linear",
        C: float = 1.0,
        max_iter: int = 1000,
        k: int = 10,
        alpha: float = 0.99,
        gamma: float = 3.0,
        hidden: int = 256,
        mlp_epochs: int = 100,
        mlp_lr: float = 1e-3,
        mlp_weight_decay: float = 1e-4,
        embed_tta: Literal["none", "d4"] = "none",
        embedding_cache_dir: str | None = None,
        embedding_dtype: EmbeddingDtype = "float16",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if head not in ("linear", "knn", "label_propagation", "mlp"):
            raise UserInputError(f"model.head={head!r} must be one of linear, knn, label_propagation, mlp")
        if k < 1 or C <= 0 or not 0.0 < alpha < 1.0:
            raise UserInputError(f"model.k={k} must be >= 1, model.C={C} > 0, model.alpha={alpha} in (0, 1)")
        self.head_name = head
        self.C, self.max_iter, self.k, self.alpha, self.gamma = C, max_iter, k, alpha, gamma
        self.hidden, self.mlp_epochs, self.mlp_lr, self.mlp_weight_decay = hidden, mlp_epochs, mlp_lr, mlp_weight_decay
        self.embed_tta = embed_tta
        self.embedding_cache_dir = embedding_cache_dir
        self.embedding_dtype: EmbeddingDtype = embedding_dtype
        self.automatic_optimization = False  # nothing is trained by gradient steps in the Lightning loop
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()
        width, classes = int(backbone(self.net).num_features), self.num_classes
        self.head: nn.Module
        if head == "linear":
            self.head = LinearHead(width, classes)
        elif head == "mlp":
            self.head = MLPHead(width, classes, hidden)
        else:
            self.head = GraphVoteHead(width, classes, k, gamma)

    def train(self, mode: bool = True) -> FrozenHead:
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen pre-logit features (B, D), averaged over ``embed_tta`` views."""
        with torch.no_grad():
            return tta_features(self.embed, images, self.embed_tta)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    # ------------------------------------------------------------------ fitting the head
    def embedding_store(self) -> EmbeddingStore:
        identity = embedding_identity(self.net, self.mean, self.std, self.embed_tta)
        root = self.embedding_cache_dir or default_embedding_dir()
        return EmbeddingStore(root, identity, self.embedding_dtype)

    def _embed(self, store: EmbeddingStore, dataset: Any, label_key: str) -> tuple[np.ndarray, np.ndarray]:
        loader = self.training_data().eval_loader(dataset)
        features, _, labels = embed_dataset(self.embed, loader, store, self.embed_tta, self.device, label_key)
        return features, labels

    def on_fit_start(self) -> None:
        data = self.training_data()
        start = time.perf_counter()
        store = self.embedding_store()
        cached = len(store)
        x, y = self._embed(store, data.labeled_dataset(), "label")
        if len(x) == 0:
            raise UserInputError("FrozenHead: the labeled training split is empty")
        unlabeled = np.zeros((0, x.shape[1]), dtype=np.float32)
        if self.head_name == "label_propagation":
            unlabeled, _ = self._embed(store, data.unlabeled_dataset(), "true_label")
        embedded = time.perf_counter()
        classes = self.num_classes
        head: nn.Module
        if self.head_name == "linear":
            head = fit_linear(x, y, classes, self.C, self.max_iter)
        elif self.head_name == "knn":
            head = fit_knn(x, y, classes, self.k, self.gamma)
        elif self.head_name == "label_propagation":
            head = fit_label_propagation(x, y, unlabeled, classes, self.k, self.alpha, self.gamma)
        else:
            head = fit_mlp(
                x, y, classes, self.hidden, self.mlp_epochs, self.mlp_lr, self.mlp_weight_decay, self.label_smoothing
            )
        self.head = head.to(self.device)
        rank_zero_info(
            f"FrozenHead[{self.head_name}]: {len(x)} labeled + {len(unlabeled)} unlabeled embeddings "
            f"({len(store) - cached} new, cache {store.directory}) in {embedded - start:.1f} s; head fitted in "
            f"{time.perf_counter() - embedded:.2f} s"
        )
        # The head is fitted: one training epoch of one (no-op) batch is enough to validate and checkpoint it.
        self.trainer.fit_loop.max_epochs = 1
        self.trainer.limit_train_batches = 1

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # type: ignore[override]
        # The head was fitted in on_fit_start. One empty optimizer step advances the global step, without which
        # Lightning's ModelCheckpoint would not save the validated epoch.
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        optimizer.step()

    def configure_optimizers(self) -> Any:
        # Over a placeholder outside the module: nothing of the network or head is trained by the loop.
        return torch.optim.SGD([torch.zeros((), requires_grad=True)], lr=0.0)
