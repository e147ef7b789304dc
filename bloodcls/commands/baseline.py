"""``bloodcls baseline``: the classical segmentation + hand-crafted features + SVM / random forest baseline.

It reads the same YAML configs as ``bloodcls fit`` and builds the same :class:`BloodCellDataModule` through the
same parser, so it sees the same images at the same resolution, deduplicated and split the same way; with
``--split_file RUN/split.csv`` it is evaluated on exactly the test images of that deep run. The classifier is
trained on the training split (with ``data.labels_per_class`` only on the labelled part: the unlabelled pool is
ignored), its hyperparameters are chosen on the validation split, and the report in the output directory has
the same files as a deep model's test report.

Features are computed at ``data.init_args.image_size``; use 64 px or more (``--image_size 96`` overrides the
config): below that, nuclear shape and chromatin texture are only a few pixels across.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse import ArgumentParser

from bloodcls.baseline.classify import METHODS, Method, fit_baseline, predict_proba
from bloodcls.baseline.features import FEATURE_NAMES, extract_many
from bloodcls.commands.common import OneLineParser, fail, parse_fit_config, quiet_third_party_noise, user_errors
from bloodcls.data import splits as S
from bloodcls.data.datamodule import BloodCellDataModule
from bloodcls.errors import UserInputError
from bloodcls.evaluation.report import print_report, write_report
from bloodcls.io import atomic_open

PROG = "bloodcls baseline"
MIN_FEATURE_SIZE = 64  # px; below this the shape and texture features lose their meaning (see features.py)
# The baseline needs no model, but the shared parser requires one: a data-only config (configs/data/*.yaml) gets
# this placeholder, which any model in the user's configs replaces. It is parsed, never built.
_PLACEHOLDER_MODEL = "bloodcls.strategies.Supervised"
# Options of this command; everything else on the command line goes to the config parser in its original order.
_OWN_OPTIONS = ("--method", "--split_file", "--output", "--image_size", "--workers")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        allow_abbrev=False,
        description=(
            "Classical baseline: segment each cell (Otsu thresholds + morphology), compute shape / GLCM / LBP / "
            "colour features and classify them with an SVM or a random forest, on the same data and split as "
            "the deep models. Other --key value options (e.g. --data.init_args.root DIR) override the config."
        ),
        epilog="Example: bloodcls baseline --config configs/quickstart.yaml --method svm "
        "--split_file runs/quickstart/version_0/split.csv",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE.yaml", help="config file(s), as for bloodcls fit"
    )
    parser.add_argument("--method", choices=METHODS, default="svm", help="classifier (default: svm)")
    parser.add_argument(
        "--split_file", metavar="RUN/split.csv", help="evaluate on the split of an earlier run (same test images)"
    )
    parser.add_argument("--output", metavar="DIR", help="report directory (default: runs/baseline_<method>)")
    parser.add_argument(
        "--image_size",
        type=int,
        metavar="N",
        help=f"resolution the features are computed at (overrides data.init_args.image_size; use >= "
        f"{MIN_FEATURE_SIZE})",
    )
    parser.add_argument("--workers", type=int, metavar="N", help="feature-extraction threads (default: CPU count)")
    return parser


def _passthrough(argv: list[str]) -> list[str]:
    """``argv`` without this command's own options: the configs and ``--key value`` overrides, order kept."""
    out: list[str] = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if name in _OWN_OPTIONS:
            skip_value = "=" not in token
            continue
        out.append(token)
    return out


def build_datamodule(config_args: list[str]) -> tuple[BloodCellDataModule, int]:
    """The datamodule (and seed) that ``bloodcls fit <config_args>`` would build, without building its model.

    ``config_args`` are LightningCLI arguments (``--config FILE`` repeated, ``--data.init_args.key value``):
    they are parsed and validated by the very parser of ``bloodcls fit``; only the ``data`` section is
    instantiated.
    """
    cli = parse_fit_config(["--model", _PLACEHOLDER_MODEL, *config_args], prog=PROG)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--data", type=BloodCellDataModule)
    cfg = parser.parse_object({"data": cli.config["data"]})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    seed = cli.config.get("seed_everything")
    return instantiate(cfg)["data"], seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _write_features_csv(
    path: Path, ids: list[str], subsets: list[str], labels: list[str], features: np.ndarray
) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "subset", "label", *FEATURE_NAMES])
        for row in zip(ids, subsets, labels, features, strict=True):
            writer.writerow([*row[:3], *(f"{v:.6g}" for v in row[3])])


def run_baseline(
    config_args: list[str],
    method: Method = "svm",
    output: str | Path | None = None,
    split_file: str | None = None,
    image_size: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build the data as ``bloodcls fit`` would, fit the baseline, write the test report; returns metrics.json."""
    if image_size is not None:
        config_args = [*config_args, "--data.init_args.image_size", str(image_size)]
    if split_file is not None:
        if not Path(split_file).is_file():
            raise UserInputError(f"--split_file: {split_file} does not exist")
        config_args = [*config_args, "--data.init_args.split_file", str(split_file)]
    dm, seed = build_datamodule(config_args)
    dm.setup("fit")
    data = dm.data
    rows = {name: dm.rows_of(name) for name in (S.TRAIN, S.VAL, S.TEST)}
    if rows[S.TEST].size == 0:
        raise UserInputError("the split has no test images (data.test_fraction / split_file): nothing to evaluate")
    if rows[S.TRAIN].size == 0:
        raise UserInputError("the split has no labelled training images")
    if dm.image_size < MIN_FEATURE_SIZE:
        print(
            f"{PROG}: warning: features computed at data.image_size={dm.image_size} px; nuclear shape and texture "
            f"need >= {MIN_FEATURE_SIZE} px (--image_size {MIN_FEATURE_SIZE})",
            file=sys.stderr,
        )

    order = np.concatenate([rows[S.TRAIN], rows[S.VAL], rows[S.TEST]])
    start = time.perf_counter()
    features = extract_many([data.images[i] for i in order], workers)  # views, not a copy of the image cache
    seconds = time.perf_counter() - start
    bounds = np.cumsum([0, *(rows[s].size for s in (S.TRAIN, S.VAL, S.TEST))])
    feats = {s: features[bounds[k] : bounds[k + 1]] for k, s in enumerate((S.TRAIN, S.VAL, S.TEST))}
    fallback_col = FEATURE_NAMES.index("seg_fallback")
    fallbacks = {s: int(f[:, fallback_col].sum()) for s, f in feats.items()}
    print(
        f"{PROG}: features of {len(order)} images at {dm.image_size} px in {seconds:.1f} s "
        f"({sum(fallbacks.values())} segmentation fallbacks)",
        file=sys.stderr,
    )

    labels = data.listing.labels
    try:
        model = fit_baseline(feats[S.TRAIN], labels[rows[S.TRAIN]], method, seed, feats[S.VAL], labels[rows[S.VAL]])
    except ValueError as err:
        raise UserInputError(f"--method {method}: {err}") from err
    probs = predict_proba(model, feats[S.TEST], dm.num_classes)

    out_dir = Path(output) if output is not None else Path("runs") / f"baseline_{method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    split_path = Path(split_file) if split_file is not None else dm.write_split(out_dir)
    names = dm.class_names
    ids = data.listing.ids
    _write_features_csv(
        out_dir / "features.csv",
        [ids[i] for i in order],
        [str(dm.subsets[i]) for i in order],
        [names[labels[i]] for i in order],
        features,
    )
    selection = model.selection_  # type: ignore[attr-defined]
    extra = {
        "method": method,
        "features": FEATURE_NAMES,
        "split": str(split_path),
        "image_size": dm.image_size,
        "seed": seed,
        "n_train": int(rows[S.TRAIN].size),
        "n_val": int(rows[S.VAL].size),
        "n_unlabeled_ignored": int(dm.rows_of(S.UNLABELED).size),
        "selection": selection,
        "segmentation_fallbacks": fallbacks,
        "feature_seconds": round(seconds, 2),
    }
    # The same data summary as the deep models' test report (bloodcls.callbacks.reports.TestReport).
    report = dm.data_report()
    extra["data"] = {k: report[k] for k in ("source", "root", "n_listed", "n_usable", "image_size")}
    extra["data"] |= {
        "n_skipped": len(report["skipped"]),
        "n_duplicate_groups": len(report["duplicate_groups"]),
        "n_label_conflicts": len(report["label_conflicts"]),
    }
    result = write_report(
        out_dir, probs, labels[rows[S.TEST]], names, paths=[ids[i] for i in rows[S.TEST]], extra=extra
    )
    score = selection["score"]
    print_report(result, title=f"Baseline test report ({method})")
    print(
        f"{PROG}: {method} {selection['params']} chosen on {selection['scored_on']}"
        + ("" if score is None else f" (balanced accuracy {100 * score:.2f}%)")
    )
    print(f"{PROG}: report written to {out_dir}")
    return result


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bloodcls baseline``; bad input exits 2 with one ``bloodcls baseline: error:`` line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = _parser().parse_known_args(argv)
    if not args.config:
        fail(PROG, "--config FILE.yaml is required (the same config files as bloodcls fit)")
    if args.image_size is not None and args.image_size < 8:
        fail(
            PROG,
            f"--image_size {args.image_size}: expected at least 8 px ({MIN_FEATURE_SIZE} or more for useful features)",
        )
    if args.workers is not None and args.workers < 1:
        fail(PROG, f"--workers {args.workers}: expected at least 1")
    quiet_third_party_noise()
    with user_errors(PROG):
        run_baseline(_passthrough(argv), args.method, args.output, args.split_file, args.image_size, args.workers)


if __name__ == "__main__":
    main()
