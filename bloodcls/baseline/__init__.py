"""Classical (pre-deep-learning) baseline: segmentation, hand-crafted features, SVM / random forest.

``bloodcls baseline --config FILE.yaml --method svm|rf`` (:func:`baseline_main`) runs it on the same data and
split as the deep models. Importing this package is light (NumPy, SciPy, scikit-image, scikit-learn); the
command, which needs the Lightning CLI, is imported on first use.
"""

from __future__ import annotations

from typing import Any

from bloodcls.baseline.classify import METHODS, fit_baseline, predict_proba
from bloodcls.baseline.features import FEATURE_NAMES, extract_features, extract_many
from bloodcls.baseline.segmentation import Segmentation, segment_cell

__all__ = [
    "FEATURE_NAMES",
    "METHODS",
    "Segmentation",
    "baseline_main",
    "extract_features",
    "extract_many",
    "fit_baseline",
    "predict_proba",
    "segment_cell",
]


def __getattr__(name: str) -> Any:
    if name == "baseline_main":
        from bloodcls.baseline.command import baseline_main

        return baseline_main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
