"""Evaluation: test-set metrics, plots and the report that ``bloodcls test`` writes."""

from bloodcls.evaluation.metrics import calibration_bins, classification_metrics, roc_curves
from bloodcls.evaluation.report import print_report, write_report

__all__ = ["calibration_bins", "classification_metrics", "print_report", "roc_curves", "write_report"]
