"""Ensembles of checkpoints: each member turns the same uint8 images into probabilities with its own
normalisation, temperature and test-time augmentation (``Classifier.eval_probabilities``); the ensemble averages
them. Members must agree on the classes (names and order) and the input size."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bloodcls.errors import UserInputError


def load_member(path: str | Path, tta: str | None = None) -> Any:
    """The strategy LightningModule of a bloodcls checkpoint, safely loaded (``weights_only``), on the CPU in eval
    mode, with the training-speed options off (never compiled, plain convolutions); ``tta`` overrides the
    checkpoint's default test-time augmentation."""
    import bloodcls.strategies  # noqa: F401  (imports every strategy so the checkpoint's class path resolves)
    from bloodcls.checkpoints import load_checkpoint
    from bloodcls.strategies.base import Classifier, registered_strategies

    # A one-line error for a missing, corrupt or unsafe file before Lightning reads it.
    checkpoint = load_checkpoint(path)
    # The checkpoint's own strategy class (LightningCLI records it), so strategy-specific state (e.g. a frozen-backbone
    # head's fitted buffers) loads; the base class when the name is unknown.
    class_path = str(checkpoint.get("hyper_parameters", {}).get("_class_path", ""))
    by_short_name = {f"bloodcls.strategies.{c.__name__}": c for c in registered_strategies().values()}
    strategy = registered_strategies().get(class_path) or by_short_name.get(class_path) or Classifier
    model = strategy.load_from_checkpoint(
        str(path), map_location="cpu", weights_only=True, compile=False, tiny_map_matmul=False
    ).eval()
    if tta is not None:
        set_tta(model, tta)
    return model


def set_tta(model: Any, tta: str) -> None:
    """Use test-time augmentation ``tta`` (``none`` / ``d4``) for ``model``'s evaluation probabilities. A referral
    threshold chosen (``bloodcls calibrate``) on the probabilities of another TTA mode is dropped with a warning: the
    views' average is less peaked than one view, so its validation accuracy target would not hold. The temperature
    stays (it still calibrates better than none)."""
    settings = replace(model.inference, tta=tta)  # __post_init__ rejects unknown modes in one line
    fitted_with = model.inference.fitted_on.get("tta", model.inference.tta)
    if settings.review_threshold is not None and tta != fitted_with:
        warnings.warn(
            f"the review threshold {settings.review_threshold:.4f} was chosen with tta {fitted_with}; with tta {tta} "
            f"it is not used (bloodcls calibrate --tta {tta} chooses one for it)",
            stacklevel=2,
        )
        settings = replace(settings, review_threshold=None)
    model.inference = settings


def ensemble_review_threshold(first: Any, n_members: int) -> float | None:
    """The referral threshold of a model or ensemble: the first checkpoint's for a single model; none for an ensemble
    (a threshold was chosen on one model's validation probabilities; an ensemble's average differs)."""
    threshold: float | None = first.inference.review_threshold
    return threshold if n_members == 1 else None


def check_compatible(
    paths: Sequence[str],
    class_names: Sequence[Sequence[str] | None],
    image_sizes: Sequence[int | None],
    center_crops: Sequence[float] | None = None,
) -> None:
    """Refuse, in one line naming both files, members trained on other classes (or another order), another input
    size or another ``data.center_crop`` than the first: their probabilities cannot be averaged. A file named twice
    is refused too: it would weigh double."""
    seen: set[Path] = set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise UserInputError(f"ensemble member {path} is named twice: each checkpoint may count once")
        seen.add(resolved)
    crops = list(center_crops) if center_crops is not None else [1.0] * len(paths)
    for path, names, size, crop in zip(paths[1:], class_names[1:], image_sizes[1:], crops[1:], strict=True):
        if names is not None and class_names[0] is not None and list(names) != list(class_names[0]):
            raise UserInputError(
                f"ensemble member {path} has classes {list(names)} but {paths[0]} has {list(class_names[0])}: "
                "only models of the same classes (same order) can be averaged"
            )
        if size is not None and image_sizes[0] is not None and size != image_sizes[0]:
            raise UserInputError(
                f"ensemble member {path} was trained at image_size {size} but {paths[0]} at {image_sizes[0]}: "
                "members of an ensemble take the same input"
            )
        if crop != crops[0]:
            raise UserInputError(
                f"ensemble member {path} was trained on data.center_crop {crop} but {paths[0]} on {crops[0]}: "
                "members of an ensemble take the same input"
            )


def average_probabilities(members: Sequence[Any], images: torch.Tensor) -> torch.Tensor:
    """Mean over the members of their evaluation probabilities (B, K) of uint8 images (B, 3, S, S)."""
    total: torch.Tensor | None = None
    for member in members:
        probs = member.eval_probabilities(images).float()
        total = probs if total is None else total + probs
    if total is None:
        raise UserInputError("an ensemble needs at least one checkpoint")
    return total / len(members)


class Ensemble(nn.Module):
    """uint8 images (B, 3, S, S) -> mean class probabilities (B, K) of one or more classifiers; one member is the
    classifier itself. The exported ONNX graph of an ensemble is this module: one graph, every member inside."""

    def __init__(self, members: Sequence[Any]) -> None:
        super().__init__()
        if not members:
            raise UserInputError("an ensemble needs at least one checkpoint")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return average_probabilities(list(self.members), images)

    def eval_probabilities(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """The ``Classifier.eval_probabilities`` contract (``logits`` is ignored: each member runs its own forward)."""
        return self(images)


def describe_members(paths: Sequence[str], members: Sequence[Any]) -> list[dict[str, Any]]:
    """Provenance of each member: its checkpoint and the inference settings it was evaluated with."""
    return [
        {"ckpt_path": str(p), "temperature": m.inference.temperature, "tta": m.inference.tta}
        for p, m in zip(paths, members, strict=True)
    ]
