"""Label-efficiency benchmark: supervised-only vs every semi-supervised strategy at N labels per class.

Every (strategy, N, seed) cell runs the real CLI -- ``bloodcls fit`` with the base config plus the strategy's
fragment from ``configs/strategies/``, then ``bloodcls test`` on its best checkpoint (selected on the small labeled
validation set) -- so the numbers are what a user gets. For a given N and seed all strategies see the same labeled
images (the split and the budget depend only on content hashes and the seed) and the rest of the training split is
their unlabeled pool. Results go to ``<out>/label_efficiency.csv`` (one row per cell, appended as cells finish, so
an interrupted run resumes) and ``<out>/label_efficiency.png``.

    python bench/label_efficiency.py --budgets 10 20 50 100 --strategies supervised pseudo_label fixmatch \
        mean_teacher self_training --seeds 0 --out bench/results/label_efficiency

Without ``--strategies`` the grid is every ``configs/strategies/*.yaml`` whose model trains a classifier (pretraining
configs such as contrastive are left out), so a new strategy's config joins it without editing this file.
    python bench/label_efficiency.py --budgets 10 --strategies mean_teacher \
        --set model.init_args.ema_decay=0.99 --variant ema0.99      # a variant: its own rows "mean_teacher-ema0.99"
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
STRATEGY_CONFIGS = REPO / "configs" / "strategies"
COLUMNS = ("strategy", "labels_per_class", "seed", "acc", "balanced_acc", "macro_f1", "n_test", "epochs", "wall_s")


def strategy_class(name: str) -> Any:
    """The model class that ``configs/strategies/<name>.yaml`` names."""
    class_path = yaml.safe_load((STRATEGY_CONFIGS / f"{name}.yaml").read_text())["model"]["class_path"]
    module, _, attr = class_path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def default_strategies() -> list[str]:
    """Every strategy config that trains a classifier, the supervised baseline first."""
    names = [p.stem for p in sorted(STRATEGY_CONFIGS.glob("*.yaml")) if not strategy_class(p.stem).pretraining]
    return sorted(names, key=lambda n: n != "supervised")


def trains_in_rounds(name: str) -> bool:
    """Round-based strategies (self-training) share the epoch budget between ``max_rounds`` + 1 rounds."""
    parameters = inspect.signature(strategy_class(name).__init__).parameters
    return "max_rounds" in parameters and "epochs_per_round" in parameters


def bloodcls_exe() -> str:
    exe = Path(sys.executable).parent / "bloodcls"
    return str(exe) if exe.exists() else "bloodcls"


def run_cell(args: argparse.Namespace, strategy: str, budget: int, seed: int) -> dict[str, object]:
    label = f"{strategy}-{args.variant}" if args.variant else strategy
    name = f"{label}_{budget}"
    version = f"seed{seed}"
    run_dir = Path(args.out) / "runs" / name / version
    overrides = [
        "--data.init_args.labels_per_class",
        str(budget),
        "--data.init_args.split_seed",
        str(seed),
        "--seed_everything",
        str(seed),
        "--trainer.max_epochs",
        str(args.max_epochs),
        "--trainer.logger.init_args.save_dir",
        str(Path(args.out) / "runs"),
        "--trainer.logger.init_args.name",
        name,
        "--trainer.logger.init_args.version",
        version,
    ]
    if args.data_root:
        overrides += ["--data.init_args.root", args.data_root]
    if args.backbone:
        overrides += ["--model.init_args.backbone", args.backbone]
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        overrides += [f"--{key}", value]
    if args.steps_per_epoch:
        overrides += ["--data.init_args.steps_per_epoch", str(args.steps_per_epoch)]
    if trains_in_rounds(strategy):
        # Same total epoch budget: round 0 plus max_rounds rounds share max_epochs.
        rounds = args.self_training_rounds
        overrides += [
            "--model.init_args.max_rounds",
            str(rounds),
            "--model.init_args.epochs_per_round",
            str(max(1, args.max_epochs // (rounds + 1))),
        ]
    configs = ["--config", str(REPO / args.base), "--config", str(REPO / "configs" / "strategies" / f"{strategy}.yaml")]
    start = time.time()
    fit = subprocess.run([bloodcls_exe(), "fit", *configs, *overrides], cwd=REPO, capture_output=True, text=True)
    if fit.returncode != 0:
        raise RuntimeError(f"fit {name} seed {seed} failed:\n{fit.stderr[-3000:]}")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    test = subprocess.run([bloodcls_exe(), "test", "--ckpt_path", str(ckpt)], cwd=REPO, capture_output=True, text=True)
    if test.returncode != 0:
        raise RuntimeError(f"test {name} seed {seed} failed:\n{test.stderr[-3000:]}")
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    return {
        "strategy": label,
        "labels_per_class": budget,
        "seed": seed,
        "acc": metrics["acc"],
        "balanced_acc": metrics["balanced_acc"],
        "macro_f1": metrics["macro_f1"],
        "n_test": metrics["n"],
        "epochs": args.max_epochs,
        "wall_s": round(time.time() - start, 1),
    }


def plot(rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        points: dict[int, list[float]] = {}
        for r in rows:
            if r["strategy"] == strategy:
                points.setdefault(int(r["labels_per_class"]), []).append(100 * float(r["acc"]))
        xs = sorted(points)
        ax.plot(xs, [sum(points[x]) / len(points[x]) for x in xs], marker="o", label=strategy)
    ax.set_xscale("log")
    ax.set_xticks(sorted({int(r["labels_per_class"]) for r in rows}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("PBC, 8 classes: label efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="configs/pbc/label_efficiency_64px.yaml")
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--strategies", nargs="+", default=None, help="configs/strategies names (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--self-training-rounds", type=int, default=3)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default="bench/results/label_efficiency")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra CLI override")
    parser.add_argument("--variant", default="", help="name suffix of the rows of runs made with --set")
    args = parser.parse_args()
    args.strategies = args.strategies or default_strategies()
    if args.set and not args.variant:
        parser.error("--set changes the recipe: name the variant with --variant so its rows stay apart")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "label_efficiency.csv"
    done: list[dict[str, str]] = list(csv.DictReader(table.open())) if table.exists() else []
    finished = {(r["strategy"], int(r["labels_per_class"]), int(r["seed"])) for r in done}
    if not table.exists():
        with table.open("w", newline="") as fh:
            csv.writer(fh).writerow(COLUMNS)
    for seed in args.seeds:
        for budget in args.budgets:
            for strategy in args.strategies:
                label = f"{strategy}-{args.variant}" if args.variant else strategy
                if (label, budget, seed) in finished:
                    continue
                row = run_cell(args, strategy, budget, seed)
                print(json.dumps(row), flush=True)
                with table.open("a", newline="") as fh:
                    csv.DictWriter(fh, COLUMNS).writerow(row)
    rows = list(csv.DictReader(table.open()))
    plot(rows, out / "label_efficiency.png")
    print(f"wrote {table} and {out / 'label_efficiency.png'}")


if __name__ == "__main__":
    main()
