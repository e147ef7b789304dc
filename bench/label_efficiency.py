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
    python bench/label_efficiency.py --budgets 10 50 all --strategies supervised fixmatch --seeds 0 1 2

``all`` is the full-label supervised row (every training label; the same validation set). ``label_efficiency.md``
has mean +- std over the seeds of each cell and, per budget, the variant of each strategy with the best mean
*validation* balanced accuracy -- the only number that chooses; the test columns are read, never used to choose.
Compute matching: every cell runs the same optimizer steps (``max_epochs x steps_per_epoch``) with the same labeled
batch, so every strategy gets the same labeled-image presentations (``labeled_seen``); the unlabeled images are
extra, and wall time is recorded beside them. Labels used = budget x classes + the labeled validation set.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.parallel_cells import CpuSlot, available_cpus, run_in_slots, split_cpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STRATEGY_CONFIGS = REPO / "configs" / "strategies"
COLUMNS = (
    "strategy",
    "labels_per_class",
    "seed",
    "acc",
    "balanced_acc",
    "macro_f1",
    "n_test",
    "epochs",
    "wall_s",
    "val_balanced_acc",
    "labeled_seen",
    "labels_used",
)
ALL = "all"  # the full-label budget: every training label


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


def best_val(metrics_csv: Path, key: str = "val/balanced_acc") -> float | None:
    """The best validation value a run logged (the checkpoint ``test`` reads was chosen on it)."""
    with metrics_csv.open() as fh:
        values = [float(r[key]) for r in csv.DictReader(fh) if r.get(key) not in (None, "")]
    return max(values) if values else None


def labels_used(run_dir: Path) -> tuple[int, int]:
    """(labeled training images, labeled validation images) of a run, from its split.csv (the pool is
    ``unlabeled`` there, so ``train`` counts the labeled budget only)."""
    with (run_dir / "split.csv").open() as fh:
        subsets = [r["subset"] for r in csv.DictReader(fh)]
    return subsets.count("train"), subsets.count("val")


def run_cell(
    args: argparse.Namespace, strategy: str, budget: int | str, seed: int, slot: CpuSlot | None = None
) -> dict[str, object]:
    label = f"{strategy}-{args.variant}" if args.variant else strategy
    name = f"{label}_{budget}"
    version = f"seed{seed}"
    run_dir = Path(args.out) / "runs" / name / version
    overrides = [
        "--data.init_args.labels_per_class",
        "null" if budget == ALL else str(budget),
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
    place = {"env": slot.env(), "preexec_fn": slot.pin} if slot is not None else {}
    start = time.time()
    fit = subprocess.run(
        [bloodcls_exe(), "fit", *configs, *overrides], cwd=REPO, capture_output=True, text=True, **place
    )
    if fit.returncode != 0:
        raise RuntimeError(f"fit {name} seed {seed} failed:\n{fit.stderr[-3000:]}")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    test = subprocess.run(
        [bloodcls_exe(), "test", "--ckpt_path", str(ckpt)], cwd=REPO, capture_output=True, text=True, **place
    )
    if test.returncode != 0:
        raise RuntimeError(f"test {name} seed {seed} failed:\n{test.stderr[-3000:]}")
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = config["data"]["init_args"]
    steps = args.max_epochs * int(data.get("steps_per_epoch") or 0)
    train_labels, val_labels = labels_used(run_dir)
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
        "val_balanced_acc": best_val(run_dir / "metrics.csv"),
        "labeled_seen": steps * int(data["batch_size"]) if steps else "",
        "labels_used": train_labels + val_labels,
    }


def pending_cells(
    seeds: list[int],
    budgets: list[int | str],
    strategies: list[str],
    variant: str,
    finished: set[tuple[str, str, int]],
) -> list[tuple[int, int | str, str]]:
    """(seed, budget, strategy) of every cell not in the table yet, seed-major: a run cut short leaves whole seeds."""
    cells = []
    for seed in seeds:
        for budget in budgets:
            for strategy in strategies:
                label = f"{strategy}-{variant}" if variant else strategy
                if (label, str(budget), seed) not in finished:
                    cells.append((seed, budget, strategy))
    return cells


def budget_key(budget: str) -> float:
    return float("inf") if budget == ALL else float(budget)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one seed) -- of percentages, as the table shows them."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One entry per (strategy, budget): mean / std over seeds of test accuracy, balanced accuracy and macro-F1 and
    validation balanced accuracy (in %), seeds, mean wall time, labels used."""
    cells: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        cells.setdefault((r["strategy"], r["labels_per_class"]), []).append(r)
    out = []
    for (strategy, budget), runs in cells.items():
        entry: dict[str, Any] = {"strategy": strategy, "budget": budget, "seeds": len(runs)}
        for key in ("acc", "balanced_acc", "macro_f1", "val_balanced_acc"):
            values = [100 * float(r[key]) for r in runs if r.get(key) not in (None, "")]
            entry[key] = mean_std(values) if values else None
        entry["wall_s"] = statistics.fmean(float(r["wall_s"]) for r in runs)
        entry["labels_used"] = runs[0].get("labels_used", "")
        out.append(entry)
    return sorted(out, key=lambda e: (budget_key(e["budget"]), e["strategy"]))


def base_strategy(label: str) -> str:
    """``fixmatch-mu3`` -> ``fixmatch``: the strategy a ``--variant`` row belongs to."""
    return label.split("-", 1)[0]


def chosen_on_validation(summary: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """For each (base strategy, budget) the variant (``strategy-variant`` rows) with the best mean validation
    balanced accuracy; test numbers play no part."""
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for e in summary:
        if e["val_balanced_acc"] is None:
            continue
        key = (base_strategy(e["strategy"]), e["budget"])
        score = e["val_balanced_acc"][0]
        if key not in best or score > best[key][0]:
            best[key] = (score, e["strategy"])
    return {key: name for key, (_, name) in best.items()}


def write_markdown(summary: list[dict[str, Any]], path: Path) -> None:
    """The README table: mean +- std over seeds; a check mark on each strategy's validation-chosen variant."""
    chosen = set(chosen_on_validation(summary).items())
    variants: dict[tuple[str, str], int] = {}
    for e in summary:
        key = (base_strategy(e["strategy"]), e["budget"])
        variants[key] = variants.get(key, 0) + 1

    def cell(value: tuple[float, float] | None) -> str:
        return "—" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}"

    lines = [
        "| labels/class | strategy | seeds | test acc. | test balanced acc. | test macro-F1 | val balanced acc. "
        "| labels used | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        key = (base_strategy(e["strategy"]), e["budget"])
        mark = " ✓" if variants[key] > 1 and (key, e["strategy"]) in chosen else ""  # a choice needs alternatives
        lines.append(
            f"| {e['budget']} | {e['strategy']}{mark} | {e['seeds']} | {cell(e['acc'])} | {cell(e['balanced_acc'])} "
            f"| {cell(e['macro_f1'])} | {cell(e['val_balanced_acc'])} | {e['labels_used']} "
            f"| {e['wall_s'] / 60:.1f} min |"
        )
    lines += ["", "✓ = of several variants of a strategy, the one chosen on validation balanced accuracy (seed mean)."]
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    summary = summarize(rows)
    for strategy in dict.fromkeys(e["strategy"] for e in summary):
        points = [e for e in summary if e["strategy"] == strategy and e["budget"] != ALL]
        if points:
            ax.errorbar(
                [int(e["budget"]) for e in points],
                [e["acc"][0] for e in points],
                yerr=[e["acc"][1] for e in points],
                marker="o",
                capsize=3,
                label=strategy,
            )
    for e in summary:
        if e["budget"] == ALL:  # the full-label row: a horizontal reference, not a point on the budget axis
            ax.axhline(e["acc"][0], ls="--", color="grey", lw=1, label=f"{e['strategy']}, all labels")
    budgets = sorted({int(r["labels_per_class"]) for r in rows if r["labels_per_class"] != ALL})
    ax.set_xscale("log")
    ax.set_xticks(budgets)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("PBC, 8 classes: label efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def budget_arg(text: str) -> int | str:
    if text == ALL:
        return ALL
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a budget is a positive number of labels per class, or 'all'")
    return value


def read_rows(table: Path) -> list[dict[str, str]]:
    """The rows so far; a table written by an older version of this script (fewer columns) keeps its rows, with the
    new columns empty."""
    if not table.exists():
        return []
    with table.open() as fh:
        return [{k: r.get(k) or "" for k in COLUMNS} for r in csv.DictReader(fh)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="configs/pbc/label_efficiency_64px.yaml")
    parser.add_argument(
        "--budgets", type=budget_arg, nargs="+", default=[10, 20, 50, 100], help="labels per class, or 'all'"
    )
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
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells run side by side, each pinned to its share of the CPUs"
    )
    args = parser.parse_args()
    args.strategies = args.strategies or default_strategies()
    if args.set and not args.variant:
        parser.error("--set changes the recipe: name the variant with --variant so its rows stay apart")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "label_efficiency.csv"
    done = read_rows(table)
    finished = {(r["strategy"], r["labels_per_class"], int(r["seed"])) for r in done}
    with table.open("w", newline="") as fh:  # rewritten: an older table gains the new columns
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(done)
    cells = pending_cells(args.seeds, args.budgets, args.strategies, args.variant, finished)

    def record(cell: tuple[int, int | str, str], row: dict[str, object]) -> None:
        print(json.dumps(row), flush=True)
        with table.open("a", newline="") as fh:
            csv.DictWriter(fh, COLUMNS).writerow(row)

    if args.jobs == 1:
        for cell in cells:
            record(cell, run_cell(args, cell[2], cell[1], cell[0]))
    else:
        try:
            slots = split_cpus(available_cpus(), args.jobs)
        except ValueError as err:
            parser.error(str(err))
        run_in_slots(cells, slots, lambda cell, slot: run_cell(args, cell[2], cell[1], cell[0], slot), record)
    rows = read_rows(table)
    plot(rows, out / "label_efficiency.png")
    write_markdown(summarize(rows), out / "label_efficiency.md")
    print(f"wrote {table}, {out / 'label_efficiency.md'} and {out / 'label_efficiency.png'}")


if __name__ == "__main__":
    main()
