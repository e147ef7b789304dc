"""LightningModules, one per learning strategy, over the shared ``Classifier`` base."""

from bloodcls.strategies.base import Classifier, UnlabeledOutput
from bloodcls.strategies.supervised import Supervised

__all__ = ["Classifier", "Supervised", "UnlabeledOutput"]
