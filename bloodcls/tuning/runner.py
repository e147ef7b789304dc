"""Ray Tune plumbing: start or join Ray, build searcher + ASHA + resources, run the trials, read the results back."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from bloodcls.errors import UserInputError
from bloodcls.tuning.results import TrialRow, error_summary, summarize_trial
from bloodcls.tuning.space import to_ray_domain
from bloodcls.tuning.sweep import Sweep
from bloodcls.tuning.trial import TrialPlan, run_trial


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A plain ``HOST:PORT`` must accept a connection: Ray itself retries an unreachable address for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", ray:// client addresses: Ray's own checks apply
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UserInputError(f"--address {address}: no Ray cluster answers there ({err.strerror or err})") from None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray on this machine's CPUs, quietly."""
    import ray

    # Trials write their logs into their run dirs; the console shows one line per finished trial.
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **quiet)
        else:
            # Ray 2.60 has no local_mode: a local instance with the CPUs this process may use (a SLURM or
            # taskset allocation, not the whole node) and no dashboard.
            # address="local": always a new instance, never one that `ray start` left running on this machine.
            ray.init(address="local", num_cpus=usable_cpus(), include_dashboard=False, **quiet)
    except ConnectionError as err:
        hint = ""
        if address and "RAY_AUTH_MODE" not in os.environ:
            # Ray sends its auth token to an explicit address only when told to (RAY_AUTH_MODE=token).
            hint = "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN)"
        raise UserInputError(f"--address {address}: cannot join a Ray cluster there ({err}){hint}") from None


def _progress_callback(metric: str, trials_dir: str) -> Any:
    """A Tune callback that prints one line per finished trial (Tune's own table is turned off)."""
    from ray import tune

    class TrialLines(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            result = trial.last_result or {}
            value = result.get(metric)
            shown = f"{metric}={value:.4f}" if isinstance(value, float) else f"no {metric} reported"
            print(f"trial {trial.trial_id} done: {shown} after {result.get('epoch', 0)} epochs", file=sys.stderr)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            log = Path(trials_dir) / trial.trial_id / "trial.log"
            print(f"trial {trial.trial_id} failed (log: {log})", file=sys.stderr)

    return TrialLines()


def _searcher(sweep: Sweep) -> Any:
    if sweep.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" banner on the console
        return OptunaSearch(seed=sweep.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sweep.seed)


def _scheduler(sweep: Sweep, max_epochs: int | None) -> Any:
    if sweep.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = sweep.scheduler.max_t or max_epochs
    if max_t is None:
        raise UserInputError("scheduler.max_t: set it in the sweep file (trainer.max_epochs is not set in the config)")
    return ASHAScheduler(
        time_attr="epoch",  # reported by ReportToTune after each validation run
        max_t=max_t,
        grace_period=min(sweep.scheduler.grace_period, max_t),
        reduction_factor=sweep.scheduler.reduction_factor,
    )


def run_trials(sweep: Sweep, plan: TrialPlan, storage: Path, max_epochs: int | None) -> list[TrialRow]:
    """Run the sweep on the Ray instance this process is connected to; one row per trial, in Ray's order."""
    # Tune's newer console output prints its banner whatever `verbose` says; the classic reporter honours 0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan), {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={key: to_ray_domain(dist, grid=sweep.search == "grid") for key, dist in sweep.space.items()},
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=sweep.num_samples,  # a grid: passes over the whole grid (Ray's rule)
            search_alg=_searcher(sweep),
            scheduler=_scheduler(sweep, max_epochs),
            trial_name_creator=lambda trial: trial.trial_id,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(storage),
            verbose=0,
            callbacks=[_progress_callback(sweep.metric, plan.trials_dir)],
        ),
    )
    # Tune logs every failed trial's traceback on the console; it is in the trial's trial.log, and the
    # summary (trials.csv, one line per failure) is ours to print.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    try:
        grid = tuner.fit()
    finally:
        tune_logger.setLevel(level)
    rows = []
    for index in range(len(grid)):
        result = grid[index]
        trial_id = Path(result.path).name
        frame = result.metrics_dataframe
        values: list[float] = []
        epochs: list[int] = []
        if frame is not None and sweep.metric in frame:
            values = [float(v) for v in frame[sweep.metric]]
            epochs = [int(e) for e in frame["epoch"]] if "epoch" in frame else []
        config = result.config or {}
        params = {k: config[k] for k in sweep.space if k in config}
        trial_max = params.get("trainer.max_epochs", max_epochs)  # max_epochs already includes fixed values
        error = error_summary(str(result.error)) if result.error is not None else ""
        run_dir = str(Path(plan.trials_dir) / trial_id)
        rows.append(summarize_trial(trial_id, params, values, epochs, sweep.mode, trial_max, run_dir, error))
    return rows
