"""Supervised-only training on the labeled set: the reference every semi-supervised strategy is compared with."""

from __future__ import annotations

from bloodcls.strategies.base import Classifier


class Supervised(Classifier):
    """Plain supervised learning (cross-entropy / focal, optional class weights) on the labeled images only.

    All behaviour lives in ``Classifier``; this subclass exists so configs name the strategy explicitly and
    the label-efficiency benchmark can compare it by name with the semi-supervised strategies.
    """
