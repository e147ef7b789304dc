"""LightningModules, one per learning strategy, over the shared ``Classifier`` base.

Every module of this package is imported here, so a strategy dropped in as one new file registers itself
(``registered_strategies()``) and its config names it as ``bloodcls.strategies.<file>.<Class>``; the names below are
re-exported for short ``class_path`` values.
"""

import importlib
import pkgutil

from bloodcls.strategies.base import Classifier, UnlabeledOutput, registered_strategies
from bloodcls.strategies.contrastive import ContrastivePretrain
from bloodcls.strategies.fixmatch import FixMatch
from bloodcls.strategies.flexmatch import FlexMatch
from bloodcls.strategies.freematch import FreeMatch
from bloodcls.strategies.frozen_head import FrozenHead
from bloodcls.strategies.mean_teacher import MeanTeacher
from bloodcls.strategies.pseudo_label import PseudoLabel
from bloodcls.strategies.self_training import SelfTraining
from bloodcls.strategies.softmatch import SoftMatch
from bloodcls.strategies.ssl_base import PseudoLabelSkeleton
from bloodcls.strategies.supervised import Supervised

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Classifier",
    "ContrastivePretrain",
    "FixMatch",
    "FlexMatch",
    "FreeMatch",
    "FrozenHead",
    "MeanTeacher",
    "PseudoLabel",
    "PseudoLabelSkeleton",
    "SelfTraining",
    "SoftMatch",
    "Supervised",
    "UnlabeledOutput",
    "registered_strategies",
]
