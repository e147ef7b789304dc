"""InferenceSettings: what a checkpoint says about turning logits into probabilities and decisions -- the
temperature fitted on validation, the confidence below which a cell is referred to a human, and the default
test-time augmentation. Stored under ``checkpoint["bloodcls"]["inference"]``; absent in older checkpoints, which
then mean temperature 1, no referral threshold, no TTA."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from bloodcls.errors import UserInputError

TTAMode = Literal["none", "d4"]


@dataclass
class InferenceSettings:
    """Post-hoc inference settings of a checkpoint.

    Attributes:
        temperature: logits are divided by it before the softmax (temperature scaling); 1 is the raw model.
        review_threshold: cells whose top probability is below it are flagged ``needs_review``; ``None``: none.
        target_accuracy: the accuracy on validation the threshold was chosen for (provenance only).
        tta: test-time augmentation used by default by test / predict / export / the Python API.
        fitted_on: provenance of the fit (split, number of images, metrics before / after).
    """

    temperature: float = 1.0
    review_threshold: float | None = None
    target_accuracy: float | None = None
    tta: TTAMode = "none"
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserInputError(f"temperature={self.temperature} must be a positive finite number")
        if self.review_threshold is not None and not 0.0 <= self.review_threshold <= 1.0:
            raise UserInputError(f"review_threshold={self.review_threshold} must be in [0, 1]")
        if self.tta not in get_args(TTAMode):
            raise UserInputError(f"tta={self.tta!r} must be one of {', '.join(get_args(TTAMode))}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: checkpoints are read with ``weights_only=True``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> InferenceSettings:
        """The settings a checkpoint recorded (unknown keys from newer versions are ignored)."""
        if not record:
            return cls()
        names = ("temperature", "review_threshold", "target_accuracy", "tta", "fitted_on")
        return cls(**{k: record[k] for k in names if k in record})
