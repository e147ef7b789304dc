"""Test-time augmentation. ``d4``: the eight symmetries of the square (four 90-degree rotations, each with and
without a horizontal flip) -- blood cells have no orientation, so every view is as valid as the original. The
probabilities of the views are averaged (after temperature scaling of each view's logits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch

from bloodcls.errors import UserInputError
from bloodcls.inference.settings import TTAMode

TTA_MODES: tuple[str, ...] = get_args(TTAMode)


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a (B, C, H, W) batch that ``mode`` averages over; ``none``: the batch itself."""
    if mode == "none":
        return [images]
    if mode == "d4":
        rotations = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
        return rotations + [torch.flip(r, dims=(3,)) for r in rotations]
    raise UserInputError(f"tta={mode!r} must be one of {', '.join(TTA_MODES)}")


def tta_probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: str,
    temperature: float = 1.0,
    plain_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the views of softmax(logits / temperature), float32 (B, K). ``plain_logits``: ``logits_of(images)``
    already computed (the test step's forward), reused for the first view, which is the batch itself."""
    views = tta_views(images, mode)
    total: torch.Tensor | None = None
    for k, view in enumerate(views):
        logits = plain_logits if k == 0 and plain_logits is not None else logits_of(view)
        probs = (logits.float() / temperature).softmax(dim=1)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(views)
