"""Classical (pre-deep-learning) baseline: segmentation, hand-crafted features, SVM / random forest.

The library lives here (NumPy, SciPy, scikit-image, scikit-learn; light to import); the ``bloodcls baseline``
command that runs it on the same data and split as the deep models is ``bloodcls.commands.baseline``.
"""

from __future__ import annotations

from bloodcls.baseline.classify import METHODS, fit_baseline, predict_proba
from bloodcls.baseline.features import FEATURE_NAMES, extract_features, extract_many
from bloodcls.baseline.segmentation import Segmentation, segment_cell

__all__ = [
    "FEATURE_NAMES",
    "METHODS",
    "Segmentation",
    "extract_features",
    "extract_many",
    "fit_baseline",
    "predict_proba",
    "segment_cell",
]
