"""Greedy layer-wise RBM pretraining of a deep belief network backbone before any strategy fine-tunes it.

Hinton, Osindero & Teh (2006): each RBM of the stack is trained with contrastive divergence on the activations of
the layer below, on unlabeled images; the stack then initialises the classifier that is fine-tuned with labels.
This callback runs that unsupervised phase at the start of ``fit`` on the training images (labels never read)
plus the unlabeled pool, so it composes with every strategy. Validation and test images are never used.

    trainer:
      callbacks:
        - class_path: bloodcls.callbacks.rbm_pretraining.GreedyRBMPretraining
          init_args: {epochs: 10}
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.data.interface import training_data
from bloodcls.errors import UserInputError


def collect_images(loaders: list[Any]) -> torch.Tensor:
    """All ``image`` tensors of the given loaders, concatenated (N, C, H, W); labels are never read."""
    batches = [batch["image"] for loader in loaders for batch in loader]
    return torch.cat(batches) if batches else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)


class GreedyRBMPretraining(Callback):
    """Greedy CD-k pretraining of the backbone's RBMs (``bloodcls_dbn``) when ``fit`` starts.

    Args:
        epochs: CD epochs per RBM (layer ``i`` trains on the mean-field activations of layers ``< i``).
        lr, cd_k, batch_size, momentum, weight_decay: contrastive-divergence settings (Hinton's practical guide).
        include_labeled: also pretrain on the labelled training images (labels unread); needed when the run has
            no unlabeled pool (plain supervised training on the whole training split).
        seed: shuffling and Gibbs-sampling seed.
    """

    def __init__(
        self,
        epochs: int = 10,
        lr: float = 0.05,
        cd_k: int = 1,
        batch_size: int = 64,
        momentum: float = 0.5,
        weight_decay: float = 2e-4,
        include_labeled: bool = True,
        seed: int = 0,
    ) -> None:
        if epochs < 1 or cd_k < 1 or batch_size < 1:
            raise UserInputError(
                f"GreedyRBMPretraining: epochs={epochs}, cd_k={cd_k}, batch_size={batch_size} must all be >= 1"
            )
        self.epochs, self.lr, self.cd_k, self.batch_size = epochs, lr, cd_k, batch_size
        self.momentum, self.weight_decay = momentum, weight_decay
        self.include_labeled, self.seed = include_labeled, seed
        self.history: list[list[float]] = []  # per RBM: mean reconstruction error per epoch

    def _images(self, trainer: L.Trainer) -> torch.Tensor:
        data = training_data(trainer)  # a clear error without bloodcls's datamodule
        loaders = [data.eval_loader(data.unlabeled_dataset())]
        if self.include_labeled:
            loaders.insert(0, data.eval_loader(data.labeled_dataset()))
        images = collect_images(loaders)  # (N, 3, H, W) uint8, training split only
        if len(images) == 0:
            raise UserInputError(
                "GreedyRBMPretraining: no images to pretrain on (include_labeled=false and no unlabeled pool)"
            )
        return images

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return  # resuming: the checkpoint already holds the pretrained (and partly fine-tuned) stack
        net = getattr(pl_module, "net", None)
        if not callable(getattr(net, "pretrain_greedy", None)):
            raise UserInputError(
                f"GreedyRBMPretraining: backbone {type(net).__name__} has no RBMs to pretrain; use "
                "model.init_args.backbone bloodcls_dbn"
            )
        images = self._images(trainer)
        self.history = net.pretrain_greedy(  # type: ignore[union-attr]
            images,
            epochs=self.epochs,
            lr=self.lr,
            cd_k=self.cd_k,
            batch_size=self.batch_size,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )
        for i, errors in enumerate(self.history):
            rank_zero_info(
                f"DBN pretraining: RBM {i} reconstruction error {errors[0]:.4f} -> {errors[-1]:.4f} "
                f"({self.epochs} CD-{self.cd_k} epochs on {len(images)} training images, labels unread)"
            )
