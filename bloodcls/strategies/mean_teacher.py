"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): an EMA teacher whose predictions on one augmented view
are the consistency targets for the student's predictions on another.

The teacher is a frozen copy of the backbone updated as an exponential moving average of the student after
every optimiser step, with the reference code's decay warm-up (``ema.ema_decay_at``); it receives no gradient. As
in the reference, student and teacher each see the WHOLE batch (labeled + unlabeled images, one forward each, so
BatchNorm statistics are shared across them) in differently augmented views (two independent draws, optionally a
strong student view and Gaussian input noise on both), and the consistency term (softmax MSE, in float32 outside
autocast) covers every image. It does send gradient into the student -- a reference implementation once shipped a
Mean Teacher whose unlabeled loss did not, which our contract test guards against. The consistency weight ramps
up with a sigmoid schedule.

The teacher's BatchNorm statistics come from its own forward passes in train mode, as in the original code.
Copying the student's instead pairs the lagging EMA weights with the *current* student's statistics, which breaks
the teacher in eval mode as soon as the two drift apart (seen on PBC at 10 labels per class: 29 % test accuracy with
copied statistics, while the same teacher in train mode labeled 95 % of the pool right). That is why the EMA is
hand-written (``bloodcls.strategies.ema``): timm's ``ModelEmaV3`` averages the student's buffers or, with
``exclude_buffers``, copies them (``test_timm_model_ema_copies_student_batchnorm_statistics`` shows it).

Under DDP the teacher stays identical on every rank: its parameters are EMAs of the student's, which DDP keeps
identical; its BatchNorm statistics come from its own rank-local forward passes, so after every step they are
averaged over the ranks (like timm's ``distribute_bn``).

Optionally (``lp_weight > 0``) the student also learns from label-propagation pseudo-labels, as the published
semi-supervised WBC pipeline combines them: every ``lp_every_n_epochs`` epochs from ``lp_start_epoch`` on, a
callback embeds the labeled set and the whole unlabeled pool with the *teacher*, propagates the labels over a
k-NN graph (Iscen et al. 2019; labeled nodes clamped), keeps those passing the confidence / entropy thresholds,
and the student gets a cross-entropy on them for the pool images of each batch (addressed by ``pool_index``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from bloodcls.data.interface import LoaderRequest
from bloodcls.strategies.backbones import backbone, frozen_copy
from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.ema import average_float_buffers, ema_decay_at, ema_update
from bloodcls.strategies.relabeling import RelabelSettings, relabel_pool
from bloodcls.strategies.ssl_losses import (
    masked_cross_entropy,
    pseudo_label_stats,
    select_pseudo_labels,
    sigmoid_rampup,
    softmax_mse,
)


class MeanTeacher(Classifier):
    """Args:
    ema_decay: teacher EMA decay (smaller during the first 1/(1-decay) steps, as in the original code).
    consistency_weight: weight of the consistency loss after ramp-up.
    rampup_epochs: sigmoid ramp-up length of the consistency weight.
    student_view: augmentation preset of the student's view (the teacher's is ``weak``; the reference used the
        same augmentation for both, two independent draws).
    input_noise: standard deviation of Gaussian noise added to both networks' normalised inputs while training.
    eval_with_teacher: validate / test / predict with the teacher (usually the better model).
    confidence_threshold: only for logging which teacher predictions would pass as pseudo-labels.
    lp_weight: weight of the cross-entropy on label-propagation pseudo-labels (0 = off, plain Mean Teacher).
    lp_start_epoch, lp_every_n_epochs: first epoch that gets propagated labels, and how often they are renewed.
    lp_confidence_threshold, lp_entropy_threshold: filters on the propagated label distributions.
    lp_k, lp_alpha: k-NN graph size and diffusion strength of label propagation.
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    def __init__(
        self,
        ema_decay: float = 0.999,
        consistency_weight: float = 10.0,
        rampup_epochs: float = 5.0,
        student_view: Literal["weak", "strong", "randaugment"] = "weak",
        input_noise: float = 0.0,
        eval_with_teacher: bool = True,
        confidence_threshold: float = 0.95,
        lp_weight: float = 0.0,
        lp_start_epoch: int = 2,
        lp_every_n_epochs: int = 1,
        lp_confidence_threshold: float = 0.9,
        lp_entropy_threshold: float = 1.0,
        lp_k: int = 10,
        lp_alpha: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if lp_weight < 0 or lp_every_n_epochs < 1 or lp_start_epoch < 0:
            raise ValueError("lp_weight must be >= 0, lp_every_n_epochs >= 1 and lp_start_epoch >= 0")
        self.ema_decay = ema_decay
        self.consistency_weight = consistency_weight
        self.rampup_epochs = rampup_epochs
        self.student_view = student_view
        self.input_noise = input_noise
        self.eval_with_teacher = eval_with_teacher
        self.confidence_threshold = confidence_threshold
        self.lp_weight = lp_weight
        self.lp_start_epoch = lp_start_epoch
        self.lp_every_n_epochs = lp_every_n_epochs
        self.lp_settings = RelabelSettings(
            "propagation", lp_confidence_threshold, lp_entropy_threshold, lp_k, lp_alpha, weight_by_certainty=False
        )
        self.teacher: torch.nn.Module = frozen_copy(self.net)
        # Propagated label per unlabeled-pool position (-1: none accepted); None until the first relabeling.
        self.lp_labels: torch.Tensor | None = None

    def configure_callbacks(self) -> list[Callback]:
        if self.lp_weight == 0:
            return []
        # Imported here: bloodcls.callbacks may import strategies, and strategies are imported first.
        from bloodcls.callbacks.label_propagation_refresh import LabelPropagationRefresh

        return [LabelPropagationRefresh()]

    def loader_request(self) -> LoaderRequest:
        views: dict[str, str | None] = {"image_student": self.student_view, "image_teacher": "weak"}
        # Labeled images get a teacher view too: consistency covers the whole batch, as in the reference.
        return LoaderRequest(labeled_views={"image": self.student_view, "image_teacher": "weak"}, unlabeled_views=views)

    def eval_network(self) -> torch.nn.Module:
        return self.teacher if self.eval_with_teacher else super().eval_network()

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        return x + self.input_noise * torch.randn_like(x) if self.training and self.input_noise > 0 else x

    def labeled_logits_and_unlabeled(
        self, labeled: Batch, unlabeled: Batch | None, batch_idx: int
    ) -> tuple[torch.Tensor, UnlabeledOutput | None]:
        if unlabeled is None:
            return super().labeled_logits_and_unlabeled(labeled, unlabeled, batch_idx)
        n = len(labeled["image"])
        student = self.net(self._inputs(torch.cat([labeled["image"], unlabeled["image_student"]])))
        with torch.no_grad():
            teacher = self.teacher(self._inputs(torch.cat([labeled["image_teacher"], unlabeled["image_teacher"]])))
        return student[:n], self.consistency(student, teacher, n, unlabeled)

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput:
        """The consistency term on unlabeled images alone (training uses the whole batch, see above)."""
        student_logits = self.net(self._inputs(batch["image_student"]))
        with torch.no_grad():
            teacher_logits = self.teacher(self._inputs(batch["image_teacher"]))
        return self.consistency(student_logits, teacher_logits, 0, batch)

    def consistency(self, student: torch.Tensor, teacher: torch.Tensor, n: int, unlabeled: Batch) -> UnlabeledOutput:
        """Softmax MSE over all rows of ``student`` / ``teacher`` (B, K); rows from ``n`` on are the unlabeled
        images (statistics, label-propagation term)."""
        with torch.no_grad():
            probs = teacher[n:].float().softmax(dim=-1)
            pseudo, mask = select_pseudo_labels(probs, self.confidence_threshold)
        loss = softmax_mse(student, teacher)
        weight = self.consistency_weight * sigmoid_rampup(self.progress_epochs(), self.rampup_epochs)
        stats = pseudo_label_stats(pseudo, mask, unlabeled.get("true_label"), self.class_names)
        if self.lp_weight == 0 or self.lp_labels is None:
            return UnlabeledOutput(loss, weight, stats)
        loss_lp, lp_mask = self.propagation_loss(student[n:], unlabeled["pool_index"])
        stats |= {"loss_consistency": loss.detach(), "loss_lp": loss_lp.detach(), "lp_mask_ratio": lp_mask.mean()}
        # Two terms with their own weights: the returned loss carries them, its weight is 1.
        return UnlabeledOutput(weight * loss + self.lp_weight * loss_lp, 1.0, stats, logged_weight=weight)

    def propagation_loss(self, student_logits: torch.Tensor, pool_index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cross-entropy of the student on the batch's images that carry an accepted propagated label, averaged
        over the whole unlabeled batch (as FixMatch masks), so few accepted labels give a small loss."""
        assert self.lp_labels is not None
        targets = self.lp_labels[pool_index.to(self.lp_labels.device)]  # (B,)
        mask = (targets >= 0).float()
        return masked_cross_entropy(student_logits.float(), targets.clamp_min(0), mask), mask

    @torch.no_grad()
    def refresh_propagated_labels(self) -> dict[str, Any]:
        """Label-propagate over the teacher's embeddings of the labeled set and the pool (collective under DDP:
        every rank calls it and gets rank 0's labels); returns the relabeling statistics."""
        result = relabel_pool(self, backbone(self.teacher), self.training_data(), self.lp_settings)
        labels = np.full(result["stats"]["pool"], -1, dtype=np.int64)
        labels[result["positions"]] = result["labels"]
        # On the module's device once per relabeling, not once per training step.
        self.lp_labels = torch.from_numpy(labels).to(self.device)
        return result

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        # Early on the student changes fast; a smaller decay lets the teacher follow (Tarvainen & Valpola).
        decay = ema_decay_at(self.global_step, self.ema_decay)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            average_float_buffers(self.teacher, trainer.strategy)  # rank-local BN statistics -> one shared estimate
        ema_update(self.teacher, self.net, decay)
