"""LightningModules, one per learning strategy, over the shared ``Classifier`` base."""

from bloodcls.strategies.base import Classifier, UnlabeledOutput
from bloodcls.strategies.contrastive import ContrastivePretrain
from bloodcls.strategies.fixmatch import FixMatch
from bloodcls.strategies.mean_teacher import MeanTeacher
from bloodcls.strategies.pseudo_label import PseudoLabel
from bloodcls.strategies.self_training import SelfTraining, SelfTrainingRounds
from bloodcls.strategies.supervised import Supervised

__all__ = [
    "Classifier",
    "ContrastivePretrain",
    "FixMatch",
    "MeanTeacher",
    "PseudoLabel",
    "SelfTraining",
    "SelfTrainingRounds",
    "Supervised",
    "UnlabeledOutput",
]
