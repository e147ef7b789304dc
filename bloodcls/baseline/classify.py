"""Classifiers of the classical baseline: standardised features into an RBF SVM or a random forest.

Hyperparameters are chosen on the validation split (balanced accuracy), never on the test split, and the chosen
model is fitted on the training split only: refitting on train + validation would give the baseline more
labelled images than the deep models it is compared with (which train on the training split and use the
validation split only for selection). Without validation data, a stratified 3-fold cross-validation on the
training split picks the hyperparameters instead.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

Method = Literal["svm", "rf"]
METHODS: tuple[str, ...] = ("svm", "rf")

# Small grids: the features are standardised, so gamma = 1 / n_features ("scale") is the natural centre.
SVM_GRID: dict[str, list[Any]] = {"clf__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "clf__gamma": ["scale", 0.005, 0.05]}
RF_GRID: dict[str, list[Any]] = {"clf__max_features": ["sqrt", 0.3], "clf__min_samples_leaf": [1, 3]}
RF_TREES = 300


def _pipeline(method: Method, seed: int, n_jobs: int | None) -> Pipeline:
    if method == "svm":
        clf: Any = SVC(kernel="rbf", class_weight="balanced", random_state=seed)
    elif method == "rf":
        clf = RandomForestClassifier(n_estimators=RF_TREES, class_weight="balanced", random_state=seed, n_jobs=n_jobs)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def _grid(method: Method) -> list[dict[str, Any]]:
    grid = SVM_GRID if method == "svm" else RF_GRID
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _with_platt_scaling(model: Pipeline, y: np.ndarray, seed: int) -> Pipeline:
    """The SVM with probabilities: what ``SVC(probability=True)`` does (deprecated in scikit-learn 1.9), spelled out.

    A sigmoid fitted on out-of-fold decision values (up to 5 stratified folds), then one SVM on all of the
    training data. Only the final model pays for it: the search ranks hard predictions.
    """
    folds = min(5, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    if folds < 2:
        raise ValueError(
            "svm: calibrated probabilities need at least 2 training images of every class; use method 'rf'"
        )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    calibrated = CalibratedClassifierCV(model.named_steps["clf"], method="sigmoid", cv=cv, ensemble=False)
    return Pipeline([("scale", model.named_steps["scale"]), ("clf", calibrated)])


def _score(
    base: Pipeline, params: dict[str, Any], X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray
) -> float:
    model = clone(base).set_params(**params).fit(X, y)
    return float(balanced_accuracy_score(yv, model.predict(Xv)))


def _check(X: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{what}: expected X (N, F) and y (N,), got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{what}: features contain nan or inf")
    return X, y


def fit_baseline(
    X: np.ndarray,
    y: np.ndarray,
    method: Method = "svm",
    seed: int = 0,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    n_jobs: int | None = None,
) -> Pipeline:
    """Fit StandardScaler + classifier on (X, y) with hyperparameters chosen on (X_val, y_val).

    ``method="svm"``: RBF ``SVC(class_weight="balanced")`` with Platt-scaled probabilities (what
    ``probability=True`` did), C and gamma from a small grid;
    ``method="rf"``: ``RandomForestClassifier(class_weight="balanced")``, max_features and min_samples_leaf
    from a small grid. Candidates are ranked by validation balanced accuracy (ties: the earlier, simpler one).
    The returned pipeline carries the search in ``selection_``: ``{"params", "score", "scored_on", "grid"}``.
    """
    X, y = _check(X, y, "training set")
    if len(np.unique(y)) < 2:
        raise ValueError("training set: need at least two classes to fit a classifier")
    base = _pipeline(method, seed, n_jobs)
    candidates = _grid(method)
    scores: list[float] = []
    if X_val is not None and y_val is not None and len(y_val) > 0:
        Xv, yv = _check(X_val, y_val, "validation set")
        scored_on = "validation"
        scores = [_score(base, params, X, y, Xv, yv) for params in candidates]
    else:
        folds = min(3, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if folds >= 2:
            scored_on = f"{folds}-fold cross-validation on the training set"
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            for params in candidates:
                fold_scores = [_score(base, params, X[a], y[a], X[b], y[b]) for a, b in cv.split(X, y)]
                scores.append(float(np.mean(fold_scores)))
        else:
            scored_on = "nothing (a class has a single training image): first grid point"
            scores = [float("nan")] * len(candidates)
    best = int(np.nanargmax(scores)) if not np.all(np.isnan(scores)) else 0
    model = clone(base).set_params(**candidates[best])
    if method == "svm":
        model = _with_platt_scaling(model, y, seed)
    model.fit(X, y)
    model.selection_ = {  # type: ignore[attr-defined]
        "params": {k.removeprefix("clf__"): v for k, v in candidates[best].items()},
        "score": None if np.isnan(scores[best]) else scores[best],
        "scored_on": scored_on,
        "grid": [
            {**{k.removeprefix("clf__"): v for k, v in p.items()}, "balanced_acc": None if np.isnan(s) else s}
            for p, s in zip(candidates, scores, strict=True)
        ],
    }
    return model


def predict_proba(model: Pipeline, X: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Class probabilities (N, K); columns are class indices 0..K-1 even if some class was absent in training."""
    X = np.asarray(X, dtype=np.float64)
    proba = model.predict_proba(X)  # (N, len(classes_))
    classes = np.asarray(model.classes_).astype(np.int64)
    k = int(num_classes if num_classes is not None else classes.max() + 1)
    out = np.zeros((len(X), k), dtype=np.float64)
    out[:, classes] = proba
    return out
