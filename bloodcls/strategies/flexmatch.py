"""FlexMatch (Zhang et al., NeurIPS 2021): FixMatch with curriculum pseudo-labeling -- per-class thresholds.

Each class's "learning effect" sigma_c is the number of pool images whose latest confident prediction (max
probability >= ``threshold``) is class c; beta_c = sigma_c / max(max_c' sigma_c', unused) with the threshold
warm-up (images never predicted confidently count as one more "class"), or / max_c' sigma_c' without it. An image
predicted as class c is accepted when its confidence reaches threshold * M(beta_c), M(x) = x / (2 - x): classes
the model has barely learned get low thresholds early, and every threshold rises to ``threshold`` as they are learned.
As in USB and TorchSSL, a step's mask uses the effects up to the previous step; its confident predictions then
update them.

The per-image latest prediction (``selected_label``, -1 = none yet) and beta (``classwise_acc``) are buffers, so
they are in the checkpoint; under DDP every rank folds in all ranks' predictions (one all-gather a step), so they
stay identical.
"""

from __future__ import annotations

from typing import Any

import torch

from bloodcls.strategies.base import Batch
from bloodcls.strategies.ema import gather_rows
from bloodcls.strategies.fixmatch import FixMatch


def flexmatch_class_effects(selected_label: torch.Tensor, num_classes: int, warmup: bool) -> torch.Tensor:
    """beta (K,) from the latest confident prediction per pool image (-1 = none): class counts normalised by the
    largest class count -- or, with the warm-up, by the largest of those and the number of unused images."""
    counts = torch.bincount(selected_label[selected_label >= 0], minlength=num_classes).float()
    unused = float((selected_label < 0).sum())
    denominator = max(float(counts.max()), unused) if warmup else float(counts.max())
    return counts / denominator if denominator > 0 else torch.zeros(num_classes)


class FlexMatch(FixMatch):
    """Args:
    threshold_warmup: count never-confident images in the normaliser (the paper's threshold warm-up).
    **kwargs: the ``FixMatch`` arguments (``threshold`` is the upper threshold tau) and the ``Classifier`` ones.
    """

    selected_label: torch.Tensor
    classwise_acc: torch.Tensor
    ignored_arguments = ("entropy_threshold",)  # per-class thresholds from ``threshold``; no entropy filter
    observe_after_mask = True  # this step's mask uses the effects up to the previous step, as USB's masking()

    def __init__(self, threshold_warmup: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold_warmup = threshold_warmup
        self.register_buffer("selected_label", torch.full((0,), -1, dtype=torch.long))
        self.register_buffer("classwise_acc", torch.zeros(self.num_classes))

    def _resize_pool(self, size: int) -> None:
        if size > len(self.selected_label):
            pad = torch.full(
                (size - len(self.selected_label),), -1, dtype=torch.long, device=self.selected_label.device
            )
            self.selected_label = torch.cat([self.selected_label, pad])

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # the warm-up counts never-confident images: all of them from the start
            pool = self.training_data().unlabeled_dataset()
            try:
                self._resize_pool(len(pool))  # type: ignore[arg-type]
            except (TypeError, IndexError):  # a dataset without a length: grow as indices arrive
                pass

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "selected_label")
        if saved is not None:  # the pool size is only known from the data; take the checkpoint's
            self.selected_label = torch.full_like(saved, -1, device=self.selected_label.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def observe(self, probs: torch.Tensor, batch: Batch) -> None:
        confidence, labels = probs.max(dim=-1)
        index = batch["pool_index"].to(self.selected_label.device)
        confidence, labels, index = (gather_rows(t, self._trainer) for t in (confidence, labels, index))
        self._resize_pool(int(index.max()) + 1 if len(index) else 0)
        confident = confidence >= self.confidence_threshold
        self.selected_label[index[confident]] = labels[confident].to(self.selected_label)
        effects = flexmatch_class_effects(self.selected_label, self.num_classes, self.threshold_warmup)
        self.classwise_acc.copy_(effects)

    def mask(self, probs: torch.Tensor) -> torch.Tensor:
        """Accept when confidence >= tau * M(beta_c) for the predicted class c, M(x) = x / (2 - x)."""
        confidence, labels = probs.max(dim=-1)
        beta = self.classwise_acc.to(probs.device)[labels]
        return confidence >= self.confidence_threshold * (beta / (2.0 - beta))
