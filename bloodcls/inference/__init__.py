"""How a trained classifier turns images into probabilities at evaluation time: test-time augmentation and the
post-hoc settings (temperature, referral threshold) stored with a checkpoint."""

from bloodcls.inference.settings import InferenceSettings, TTAMode
from bloodcls.inference.tta import TTA_MODES, tta_probabilities, tta_views

__all__ = ["TTA_MODES", "InferenceSettings", "TTAMode", "tta_probabilities", "tta_views"]
