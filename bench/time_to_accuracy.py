"""Time to accuracy: wall-clock minutes of ``bloodcls fit`` with a recipe until the test split reaches 97 % / 98 %.

Runs the real CLI in-process (``bloodcls fit --config RECIPE`` plus any overrides) with one benchmark-only callback
(``bench.common.TestAccuracyTimeline``): after every epoch's validation it measures test accuracy with the clock
paused (never used for selection; the run trains exactly as without it). Then ``bloodcls test`` evaluates the
best-on-validation checkpoint, the number a user reports.

    python bench/time_to_accuracy.py --config configs/pbc/cnn_small_64px_crop.yaml [--max-epochs N] [-- OVERRIDES]

Writes ``bench/results/time_to_accuracy/<recipe>.{json,csv}`` (one row per epoch) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    RESULTS,
    TestAccuracyTimeline,
    machine_state,
    plain_argv,
    set_threads,
    write_results,
)
from bloodcls.cli import BloodCLI  # noqa: E402

TIMELINE = '[{"class_path": "bench.common.TestAccuracyTimeline"}]'


def first_crossing(rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first epoch whose test accuracy reaches ``target``."""
    return next((r for r in rows if r["test_acc"] >= target), None)


def drop_bench_callback(config_path: Path) -> None:
    """Remove the timeline callback from the run's saved config.yaml: it is benchmark instrumentation, and
    ``bloodcls test --ckpt_path RUN/...`` (which reuses config.yaml) could not import it outside this script."""
    config = yaml.safe_load(config_path.read_text())
    callbacks = config.get("trainer", {}).get("callbacks") or []
    kept = [c for c in callbacks if not str(c.get("class_path", "")).startswith("bench.")]
    config["trainer"]["callbacks"] = kept or None
    note = "# bench/time_to_accuracy.py removed its benchmark-only TestAccuracyTimeline from trainer.callbacks\n"
    config_path.write_text(note + yaml.safe_dump(config, sort_keys=False))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the recipe (a full bloodcls fit config)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.97, 0.98])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: physical cores)")
    parser.add_argument("--max-epochs", type=int, default=None, help="shorten the recipe (fit overrides still win)")
    parser.add_argument("--out", default=str(RESULTS / "time_to_accuracy"))
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then bloodcls fit overrides")
    args = parser.parse_args(argv)
    args.overrides = [a for a in args.overrides if a != "--"] if args.overrides[:1] == ["--"] else args.overrides
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    recipe = Path(args.config).stem + ("" if args.max_epochs is None else f"_e{args.max_epochs}")
    out = Path(args.out)
    runs = out / "runs"
    state_before = machine_state()
    fit_cmd = [
        "fit",
        "--config",
        args.config,
        "--trainer.logger.init_args.save_dir",
        str(runs),
        *([] if args.max_epochs is None else ["--trainer.max_epochs", str(args.max_epochs)]),
        *args.overrides,
        "--trainer.callbacks",
        TIMELINE,
    ]
    start = time.perf_counter()
    with plain_argv():
        fit = BloodCLI(args=fit_cmd)
    fit_wall_s = time.perf_counter() - start
    timeline = next(c for c in fit.trainer.callbacks if isinstance(c, TestAccuracyTimeline))
    run_dir = Path(fit.trainer.log_dir)
    drop_bench_callback(run_dir / "config.yaml")
    best = run_dir / "checkpoints" / "best.ckpt"
    start = time.perf_counter()
    test_args = ["--config", str(run_dir / "config.yaml"), "--ckpt_path", str(best)]
    with plain_argv():
        BloodCLI(args=["test", *test_args])
    test_wall_s = time.perf_counter() - start
    report = json.loads((run_dir / "test" / "metrics.json").read_text())
    crossings: dict[str, Any] = {}
    for target in args.targets:
        row = first_crossing(timeline.rows, target)
        hit = None if row is None else {"epoch": row["epoch"], "minutes": row["train_wall_s"] / 60}
        crossings[f"{target:.2f}"] = hit
    summary = {
        "benchmark": "time_to_accuracy",
        "recipe": args.config,
        "command": " ".join([sys.executable, *sys.argv]),
        "overrides": args.overrides,
        "max_epochs": args.max_epochs,
        "threads": threads,
        "nice": os.nice(0),
        "machine_before": state_before,
        "machine_after": machine_state(),
        "fit_wall_min": fit_wall_s / 60,
        "test_wall_s": test_wall_s,
        "run_dir": str(run_dir),
        "best_checkpoint": str(best),
        "best_test": {k: report.get(k) for k in ("acc", "balanced_acc", "macro_f1", "n")},
        "time_to_target": crossings,
    }
    path = write_results(out, recipe, summary, timeline.rows)
    print(
        f"\ntime to accuracy ({args.config}; {threads} threads; load avg before {state_before['load_avg_1_5_15']}, "
        f"after {summary['machine_after']['load_avg_1_5_15']})"
    )
    for row in timeline.rows:
        print(
            f"  epoch {row['epoch']:3d}  {row['train_wall_s'] / 60:6.2f} min  val acc {row['val_acc']:.4f}  "
            f"test acc {row['test_acc']:.4f}"
        )
    for target, hit in crossings.items():
        text = "not reached" if hit is None else f"{hit['minutes']:.1f} min (epoch {hit['epoch']})"
        print(f"  test acc >= {float(target):.0%}: {text}")
    best_test = summary["best_test"]
    print(
        f"  fit wall {summary['fit_wall_min']:.1f} min; best-on-val checkpoint: test acc {best_test['acc']:.4f}, "
        f"balanced {best_test['balanced_acc']:.4f}, macro-F1 {best_test['macro_f1']:.4f} (n={best_test['n']})"
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
