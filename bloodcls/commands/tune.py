"""``bloodcls tune``: a Ray Tune sweep over any ``bloodcls fit`` config key, declared in a sweep file.

Each trial is the normal ``bloodcls fit`` (same parser, same configs) with the trial's sampled values; the
validation metric goes to Ray after every validation run (ASHA can stop a trial early). Outputs in ``--output``:
``trials.csv`` (one row per trial), ``best_config.yaml`` (``bloodcls fit --config`` runs it), ``plots/`` (the
metric against each searched parameter), ``trials/<id>/`` (each trial's run dir), ``ray/`` (Ray's own files).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bloodcls.commands.common import OneLineParser, fail, user_errors
from bloodcls.errors import UserInputError
from bloodcls.tuning.config import (
    absolute_paths,
    check_space_keys,
    max_epochs,
    overrides,
    resolve_config,
    write_config,
)
from bloodcls.tuning.results import TrialRow, best_trial, rank, write_trials_csv
from bloodcls.tuning.sweep import (
    SEARCHES,
    Sweep,
    grid_size,
    load_sweep,
    normalise_key,
    pin_overridden_keys,
    with_command_line,
)

PROG = "bloodcls tune"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        allow_abbrev=False,
        description=(
            "Ray Tune sweep over bloodcls fit config keys. The sweep file declares the search space, the "
            "validation metric, the search algorithm, ASHA and resources per trial (see configs/sweeps/); the "
            "options below override it. Other --key value options override the configs of every trial."
        ),
        epilog="Example: bloodcls tune --config configs/quickstart.yaml --config configs/strategies/pseudo_label.yaml "
        "--sweep configs/sweeps/pseudo_label_thresholds.yaml --num_samples 20",
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml", help="fit config(s), repeatable")
    parser.add_argument("--sweep", required=True, metavar="SWEEP.yaml", help="the sweep file")
    parser.add_argument("--num_samples", type=int, metavar="N", help="number of trials")
    parser.add_argument("--address", metavar="HOST:PORT", help="join this Ray cluster (default: start Ray locally)")
    parser.add_argument("--output", metavar="DIR", help="output directory (default: runs/tune/<sweep name>)")
    parser.add_argument("--cpus_per_trial", type=float, metavar="N", help="CPUs reserved per trial")
    parser.add_argument("--gpus_per_trial", type=float, metavar="N", help="GPUs per trial (fractions share a GPU)")
    parser.add_argument("--search", choices=SEARCHES, help="search algorithm")
    parser.add_argument("--seed", type=int, help="seed of the search algorithm (trials keep the config's seed)")
    return parser


def _overridden_keys(extra: list[str]) -> set[str]:
    """Config keys set by ``--key value`` overrides on the command line (normalised)."""
    return {normalise_key(t.split("=", 1)[0]) for t in extra if t.startswith("--") and t != "--config"}


def _output_dir(given: str | None, sweep: Sweep) -> Path:
    out = Path(given or Path("runs") / "tune" / sweep.name).absolute()
    if (out / "trials.csv").exists():
        raise UserInputError(f"--output {out} already holds a sweep (trials.csv); choose another --output")
    return out


def _prepare(args: argparse.Namespace, extra: list[str]) -> tuple[Sweep, Path, Path, dict[str, Any]]:
    """Validate everything before Ray starts: sweep file, configs, keys. Returns sweep, out dir, base config."""
    if not args.config:
        raise UserInputError("--config: give at least one fit config (e.g. --config configs/quickstart.yaml)")
    sweep = with_command_line(
        load_sweep(args.sweep), args.num_samples, args.search, args.seed, args.cpus_per_trial, args.gpus_per_trial
    )
    sweep, pinned = pin_overridden_keys(sweep, _overridden_keys(extra))
    for key in pinned:
        print(f"{PROG}: {key} is set on the command line, so it is not searched", file=sys.stderr)
    if sweep.search == "grid":  # num_samples means passes here: say what the run will cost
        trials = grid_size(sweep.space) * sweep.num_samples
        print(
            f"{PROG}: grid of {grid_size(sweep.space)} cells x {sweep.num_samples} pass(es) = {trials} trials",
            file=sys.stderr,
        )
    out = _output_dir(args.output, sweep)
    cwd = Path.cwd()
    configs = [arg for c in args.config for arg in ("--config", str((cwd / c).absolute()))]
    resolved = absolute_paths(resolve_config([*configs, *extra]), cwd)
    base = write_config(resolved, out / "base_config.yaml", "bloodcls tune: configs + command-line overrides")
    check_space_keys(base, sweep, f"sweep file {args.sweep}")
    with_fixed = resolve_config(["--config", str(base), *overrides(sweep.fixed)])
    workers = ((with_fixed.get("data") or {}).get("init_args") or {}).get("num_workers")
    if isinstance(workers, int) and workers >= sweep.cpus_per_trial:
        print(
            f"{PROG}: note: data.num_workers={workers} loader processes per trial on {sweep.cpus_per_trial:g} "
            "CPU(s) per trial oversubscribes the CPUs; raise --cpus_per_trial or lower data.num_workers",
            file=sys.stderr,
        )
    return sweep, out, base, with_fixed


def _finish(rows: list[TrialRow], sweep: Sweep, out: Path, base: Path) -> None:
    """trials.csv, best_config.yaml and the plots; a summary on stdout."""
    from bloodcls.tuning.plots import plot_sweep

    keys = list(sweep.space)
    csv_path = write_trials_csv(rank(rows, sweep.mode), keys, sweep.metric, out / "trials.csv")
    print(f"{len(rows)} trials: {csv_path}")
    best = best_trial(rows, sweep.mode)
    if best is None:
        errors = [r for r in rows if r.error]
        first = f"; first error, {errors[0].run_dir}/trial.log: {errors[0].error}" if errors else ""
        fail(PROG, f"no trial reported {sweep.metric}{first}", code=1)
    plots = plot_sweep(rows, sweep.space, sweep.metric, out / "plots")
    print(f"plots: {', '.join(str(p) for p in plots)}")
    config = resolve_config(["--config", str(base), *overrides(sweep.fixed), *overrides(best.params)])
    header = f"bloodcls tune: best trial {best.trial_id} of sweep '{sweep.name}', {sweep.metric}={best.best:.4f}"
    best_path = write_config(config, out / "best_config.yaml", header)
    failed = sum(r.status == "error" for r in rows)
    if failed:
        print(f"{PROG}: {failed} of {len(rows)} trials failed; see the error column of {csv_path}", file=sys.stderr)
    shown = ", ".join(f"{k}={v}" for k, v in best.params.items())
    print(f"best: trial {best.trial_id}, {sweep.metric}={best.best:.4f} ({shown}); run dir {best.run_dir}")
    print(f"best config: {best_path}  (bloodcls fit --config {best_path})")


def main(argv: list[str]) -> None:
    """Entry point of ``bloodcls tune`` (dispatched from bloodcls.cli)."""
    args, extra = _parser().parse_known_args(argv)
    with user_errors(PROG):
        sweep, out, base, resolved = _prepare(args, extra)
        from bloodcls.tuning.runner import run_trials, start_ray
        from bloodcls.tuning.trial import TrialPlan

        plan = TrialPlan(
            base_config=str(base),
            fixed_args=overrides(sweep.fixed),
            trials_dir=str(out / "trials"),
            metric=sweep.metric,
            logger=(resolved.get("trainer") or {}).get("logger"),
            threads=max(1, int(sweep.cpus_per_trial)),
            env={k: v for k, v in os.environ.items() if k.startswith("BLOODCLS_")},
        )
        start_ray(args.address)
        try:
            rows = run_trials(sweep, plan, out, max_epochs(resolved))
        finally:
            import ray

            ray.shutdown()
        _finish(rows, sweep, out, base)
