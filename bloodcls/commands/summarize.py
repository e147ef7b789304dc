"""``bloodcls summarize``: mean ± std of test metrics over runs (k-fold folds, seeds), as a table, CSV and JSON."""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bloodcls.commands.common import fail
from bloodcls.errors import UserInputError
from bloodcls.io import atomic_open
from bloodcls.io import write_json as write_json_file

# Headline keys of test/metrics.json (bloodcls.evaluation.metrics.classification_metrics), in report order.
HEADLINE_METRICS: tuple[str, ...] = (
    "acc",
    "balanced_acc",
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "macro_specificity",
    "auroc",
    "nll",
    "ece",
)
PER_CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "specificity", "auroc")
CSV_FIELDS: tuple[str, ...] = ("metric", "n", "mean", "std", "min", "max")
# Percentages read better for rates; nll is a log-loss and stays a plain number.
_NOT_A_RATE = {"nll"}


@dataclass(frozen=True)
class MetricSummary:
    """One metric over runs; ``n`` counts the runs where it is defined (e.g. AUROC needs every class present)."""

    metric: str
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None when n < 2
    min: float | None
    max: float | None


def summarize_values(metric: str, values: Sequence[float | None]) -> MetricSummary:
    """Mean, sample std (ddof=1), min and max of the defined values; undefined ones (None / NaN) are not counted."""
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(defined)
    if n == 0:
        return MetricSummary(metric, 0, None, None, None, None)
    mean = sum(defined) / n
    # Sample std: folds / seeds are a sample of the splits one could have drawn, so ddof=1 as papers report it.
    std = math.sqrt(sum((v - mean) ** 2 for v in defined) / (n - 1)) if n > 1 else None
    return MetricSummary(metric, n, mean, std, min(defined), max(defined))


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Headline metrics plus ``<metric>/<class>`` for each per-class row of one metrics.json."""
    flat: dict[str, float | None] = {name: metrics.get(name) for name in HEADLINE_METRICS}
    for row in metrics.get("per_class", []):
        for name in PER_CLASS_METRICS:
            flat[f"{name}/{row['class']}"] = row.get(name)
    return flat


def summarize_runs(per_run: Sequence[Mapping[str, Any]]) -> list[MetricSummary]:
    """Summaries of every metric found in any run, headline metrics first, then per class in first-seen order."""
    flats = [flatten_metrics(m) for m in per_run]
    names: list[str] = []
    for flat in flats:
        names.extend(name for name in flat if name not in names)
    return [summarize_values(name, [flat.get(name) for flat in flats]) for name in names]


def find_metrics_file(run: Path) -> Path:
    """``run`` may be a metrics.json, a directory holding one, or a run directory holding test/metrics.json."""
    for candidate in (run, run / "test" / "metrics.json", run / "metrics.json"):
        if candidate.is_file():
            return candidate
    raise UserInputError(
        f"{run}: no test/metrics.json (evaluate the run first: bloodcls test --ckpt_path {run}/checkpoints/best.ckpt)"
    )


def load_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"{path}: not a readable metrics.json ({err})") from None
    if not isinstance(data, dict) or "acc" not in data:
        raise UserInputError(f"{path}: not a bloodcls test metrics.json (no 'acc' key)")
    return data


@dataclass(frozen=True)
class RunIdentity:
    """What must agree between runs before their metrics may be averaged: the classes and the test set."""

    name: str
    classes: tuple[str, ...]
    n_test: int | None  # metrics.json's image count
    test_set: frozenset[str] | None  # content hashes of the images the test report scored (None: no split.csv)
    all_images: frozenset[str] | None  # content hashes of every split.csv row (the dataset the folds partition)
    n_folds: int | None  # the run config's data n_folds (None: not a k-fold run, or no config.yaml)
    inference: str | None = None  # how the test report predicted: members and their TTA (None: not recorded)


def run_dir_of(metrics_file: Path) -> Path:
    """The run directory of a metrics.json (``RUN/test/metrics.json`` or ``RUN/metrics.json``)."""
    return metrics_file.parent.parent if metrics_file.parent.name == "test" else metrics_file.parent


def _csv_rows(path: Path) -> list[dict[str, str]] | None:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def _split_sets(run: Path, scored: Path) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """(the test set, every image) as content hashes of the run's split.csv. The test set is the images the test
    report scored (``scored``: its test_predictions.csv) when split.csv lists every one of them -- a re-test on
    another split file of the same data scores other images than the fit's split -- and split.csv's test rows
    otherwise (no report rows, or paths the split does not know, e.g. the data was tested from another root)."""
    rows = _csv_rows(run / "split.csv")
    if rows is None:
        return None, None
    keys = [(r.get("hash") or r.get("path") or "", r.get("subset", "")) for r in rows]
    if not keys or any(not k for k, _ in keys):
        return None, None
    test_set = frozenset(k for k, subset in keys if subset == "test")
    predictions = _csv_rows(scored)
    hash_of = {r.get("path"): key for r, (key, _) in zip(rows, keys, strict=True)}
    if predictions and all(r.get("path") in hash_of for r in predictions):
        test_set = frozenset(hash_of[r["path"]] for r in predictions)
    return test_set, frozenset(k for k, _ in keys)


def _inference(metrics: Mapping[str, Any]) -> str | None:
    """How the test report predicted, from metrics.json["inference"]: the number of models and each one's TTA."""
    record = metrics.get("inference")
    members = record.get("members") if isinstance(record, Mapping) else None
    if not isinstance(members, list) or not members:
        return None
    ttas = "/".join(str(m.get("tta", "none")) if isinstance(m, Mapping) else "?" for m in members)
    return f"{len(members)} model{'' if len(members) == 1 else 's'} with tta {ttas}"


def _n_folds(run: Path) -> int | None:
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    data = config.get("data") if isinstance(config, dict) else None
    data = data.get("init_args", data) if isinstance(data, dict) else None
    n_folds = data.get("n_folds") if isinstance(data, dict) else None
    return n_folds if isinstance(n_folds, int) and n_folds >= 2 else None


def run_identity(name: str, metrics_file: Path, metrics: Mapping[str, Any]) -> RunIdentity:
    """Classes and TTA / ensemble from metrics.json, the test set from the run's split.csv and the report's
    test_predictions.csv, k-fold from its config.yaml."""
    run = run_dir_of(metrics_file)
    test_set, all_images = _split_sets(run, metrics_file.parent / "test_predictions.csv")
    classes = tuple(str(row.get("class")) for row in metrics.get("per_class", []))
    n = metrics.get("n")
    n_test = n if isinstance(n, int) else None
    return RunIdentity(name, classes, n_test, test_set, all_images, _n_folds(run), _inference(metrics))


def _is_kfold(runs: Sequence[RunIdentity]) -> bool:
    """Folds of one k-fold split: over one common image set (from split.csv), test sets that are pairwise disjoint,
    or the same folds equally often (folds x seeds) -- a fold counted twice would weigh double in the mean; without
    split.csv, every config naming the same n_folds."""
    if all(r.test_set is not None and r.all_images is not None for r in runs):
        if len({r.all_images for r in runs}) != 1:
            return False
        folds = Counter(r.test_set or frozenset() for r in runs)
        distinct = list(folds)
        disjoint = all(not (a & b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])
        return disjoint and len(set(folds.values())) == 1
    return runs[0].n_folds is not None and len({r.n_folds for r in runs}) == 1


def check_comparable(runs: Sequence[RunIdentity]) -> None:
    """Refuse (UserInputError, one line naming the run and the difference) to average runs of other classes or
    other test sets; the folds of a k-fold split have different test sets on purpose and are allowed."""
    first = runs[0]
    for run in runs[1:]:
        if set(run.classes) != set(first.classes):
            raise UserInputError(
                f"{run.name} has classes [{', '.join(run.classes)}] but {first.name} has "
                f"[{', '.join(first.classes)}]: runs with different classes cannot be averaged"
            )
    recorded = [r for r in runs if r.inference is not None]  # metrics.json of older versions did not record it
    for run in recorded[1:]:
        if run.inference != recorded[0].inference:
            raise UserInputError(
                f"{run.name} was tested with {run.inference} but {recorded[0].name} with {recorded[0].inference}: "
                "re-test them alike (bloodcls test --tta ...) before averaging"
            )
    if len(runs) < 2 or _is_kfold(runs):
        return
    for run in runs[1:]:
        if run.test_set is not None and first.test_set is not None:
            if run.test_set != first.test_set:
                differ = len(run.test_set ^ first.test_set)
                raise UserInputError(
                    f"{run.name} was tested on a different test set than {first.name} ({len(run.test_set)} vs "
                    f"{len(first.test_set)} images, {differ} not in both): runs with different test "
                    "sets cannot be averaged (k-fold folds are recognised by disjoint test sets of one dataset)"
                )
        elif run.n_test != first.n_test:
            raise UserInputError(
                f"{run.name} was tested on {run.n_test} images but {first.name} on {first.n_test}: runs with "
                "different test sets cannot be averaged"
            )


def _pct(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if metric in _NOT_A_RATE else f"{100 * value:.2f}"


def print_summary(summaries: Sequence[MetricSummary], n_runs: int, console: Console | None = None) -> None:
    """The headline metrics as a table: mean ± std in percent (nll as is), n, min and max."""
    console = console or Console()
    # A title line rather than a table title: rich wraps a title that is wider than the (narrow) table.
    console.print(f"Test metrics over {n_runs} run{'' if n_runs == 1 else 's'} (mean ± sample std, %)")
    table = Table()
    table.add_column("Metric")
    for column in ("n", "Mean ± std", "Min", "Max"):
        table.add_column(column, justify="right")
    for s in summaries:
        if s.metric not in HEADLINE_METRICS:
            continue
        spread = f" ± {_pct(s.std, s.metric)}" if s.std is not None else ""
        table.add_row(s.metric, str(s.n), _pct(s.mean, s.metric) + spread, _pct(s.min, s.metric), _pct(s.max, s.metric))
    console.print(table)


def write_csv(summaries: Sequence[MetricSummary], path: Path) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for s in summaries:
            # Undefined values are empty cells, never the string "None".
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(s).items()})


def write_json(
    summaries: Sequence[MetricSummary], runs: Sequence[Path], per_run: Sequence[Mapping[str, Any]], path: Path
) -> None:
    flats = [flatten_metrics(m) for m in per_run]
    document = {
        "runs": [str(r) for r in runs],
        "std": "sample standard deviation (ddof=1)",
        "metrics": {s.metric: {**asdict(s), "values": [flat.get(s.metric) for flat in flats]} for s in summaries},
    }
    write_json_file(path, document)


def main(argv: list[str]) -> None:
    """Entry point of ``bloodcls summarize RUN_DIR... [--output FILE.csv|FILE.json]``; errors exit 2 in one line."""
    parser = argparse.ArgumentParser(
        prog="bloodcls summarize",
        description="Mean ± sample std (and n) of the test metrics of several runs, e.g. the folds of a k-fold "
        "job or runs with different seeds. Reads RUN/test/metrics.json (written by `bloodcls test`).",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directory (or its metrics.json)")
    parser.add_argument(
        "--output",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="write the summary to FILE.csv or FILE.json (repeat for both); headline and per-class metrics",
    )
    args = parser.parse_args(argv)
    try:
        bad = [p for p in args.output if p.suffix not in (".csv", ".json")]
        if bad:
            raise UserInputError(f"--output {bad[0]}: expected a file name ending in .csv or .json")
        files = [find_metrics_file(run) for run in args.runs]
        per_run = [load_metrics(path) for path in files]
        identities = [run_identity(str(r), f, m) for r, f, m in zip(args.runs, files, per_run, strict=True)]
        check_comparable(identities)
        summaries = summarize_runs(per_run)
        for out in args.output:
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix == ".csv":
                write_csv(summaries, out)
            else:
                write_json(summaries, args.runs, per_run, out)
    except UserInputError as err:
        fail(parser.prog, str(err))
    print_summary(summaries, len(per_run))
    for out in args.output:
        print(f"{parser.prog}: wrote {out}")
    note = ensemble_note(args.runs, files, identities)
    if note:
        print(note)


def ensemble_note(runs: Sequence[Path], files: Sequence[Path], identities: Sequence[RunIdentity]) -> str | None:
    """For the folds of a k-fold run: the command that evaluates their ensemble, and on what it may be evaluated.
    Every image of the dataset trained all folds but one, so no fold's test split can score the ensemble."""
    if len(runs) < 2 or not _is_kfold(identities):
        return None
    test_sets = [r.test_set for r in identities]
    if all(t is not None for t in test_sets) and len(set(test_sets)) < len(test_sets):
        return None  # runs sharing a test set (seeds of one fold) are not the folds of one split
    ckpts = [run_dir_of(f) / "checkpoints" / "best.ckpt" for f in files]
    return (
        f"Ensemble of the {len(ckpts)} folds (mean of their probabilities): each image of this dataset was in the "
        "training data of all folds but one, so no fold's test split can evaluate it (bloodcls test refuses). "
        "Evaluate it on images no fold saw:\n"
        f"  bloodcls test --ckpt_path {ckpts[0]} --ensemble {' '.join(str(c) for c in ckpts[1:])} "
        "--data.init_args.split_file HELD_OUT_SPLIT.csv   # or: bloodcls predict ... --data.init_args.predict_root NEW"
    )
