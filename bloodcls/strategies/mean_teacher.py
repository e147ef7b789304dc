"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): an EMA teacher whose predictions on one augmented view
are the consistency targets for the student's predictions on another.

The teacher is a frozen copy of the backbone updated as an exponential moving average of the student after
every optimiser step; it receives no gradient. The consistency term (softmax MSE) does send gradient into the
student -- a reference implementation once shipped a Mean Teacher whose unlabeled loss did not, which our
contract test guards against. The consistency weight ramps up with a sigmoid schedule.

Under DDP the teacher stays identical on every rank: its parameters are EMAs of the student's, which DDP keeps
identical; its BatchNorm statistics come from its own rank-local forward passes, so after every step they are
averaged over the ranks (like timm's ``distribute_bn``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from bloodcls.strategies.base import Batch, Classifier, UnlabeledOutput
from bloodcls.strategies.ssl_losses import select_pseudo_labels, sigmoid_rampup, softmax_mse


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, for parameters only.

    The teacher's BatchNorm statistics come from its own forward passes in train mode, as in the original code.
    Copying the student's instead pairs the lagging EMA weights with the *current* student's statistics, which
    breaks the teacher in eval mode as soon as the two drift apart (seen on PBC at 10 labels per class: 29 % test
    accuracy with copied statistics, while the same teacher in train mode labeled 95 % of the pool right).
    """
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)


@torch.no_grad()
def average_float_buffers(module: torch.nn.Module, strategy: Strategy) -> None:
    """Replace every floating-point buffer (BN running mean / var) by its mean over the ranks: one all-reduce."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])  # (sum of buffer sizes,)
    flat = strategy.reduce(flat, reduce_op="mean")
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


class MeanTeacher(Classifier):
    """Args:
    ema_decay: teacher EMA decay (smaller during the first 1/(1-decay) steps, as in the original code).
    consistency_weight: weight of the consistency loss after ramp-up.
    rampup_epochs: sigmoid ramp-up length of the consistency weight.
    eval_with_teacher: validate / test / predict with the teacher (usually the better model).
    confidence_threshold: only for logging which teacher predictions would pass as pseudo-labels.
    **kwargs: the ``Classifier`` arguments (backbone, optimizer, loss, ...).
    """

    def __init__(
        self,
        ema_decay: float = 0.999,
        consistency_weight: float = 10.0,
        rampup_epochs: float = 5.0,
        eval_with_teacher: bool = True,
        confidence_threshold: float = 0.95,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ema_decay = ema_decay
        self.consistency_weight = consistency_weight
        self.rampup_epochs = rampup_epochs
        self.eval_with_teacher = eval_with_teacher
        self.confidence_threshold = confidence_threshold
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def unlabeled_views(self) -> dict[str, str | None]:
        return {"image_student": "weak", "image_teacher": "weak"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        use_teacher = self.eval_with_teacher and not self.training
        return (self.teacher if use_teacher else self.net)(self.preprocess(images))

    def unlabeled_loss(self, batch: Batch, batch_idx: int) -> UnlabeledOutput:
        student_logits = self.net(self.preprocess(batch["image_student"]))
        with torch.no_grad():
            teacher_logits = self.teacher(self.preprocess(batch["image_teacher"]))
            pseudo, mask = select_pseudo_labels(teacher_logits.float().softmax(dim=-1), self.confidence_threshold)
        loss = softmax_mse(student_logits, teacher_logits)
        weight = self.consistency_weight * sigmoid_rampup(self.progress_epochs(), self.rampup_epochs)
        return UnlabeledOutput(loss, weight, self.pseudo_label_stats(pseudo, mask, batch.get("true_label")))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Early on the student changes fast; a smaller decay lets the teacher follow (Tarvainen & Valpola).
        decay = min(self.ema_decay, 1.0 - 1.0 / (self.global_step + 1))
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            average_float_buffers(self.teacher, trainer.strategy)  # rank-local BN statistics -> one shared estimate
        ema_update(self.teacher, self.net, decay)
