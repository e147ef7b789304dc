"""The sweep file (``configs/sweeps/*.yaml``): metric, search algorithm, ASHA, resources and search space."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from bloodcls.errors import MissingPathError, UserInputError
from bloodcls.tuning.space import Distribution, parse_space

SearchName = Literal["random", "optuna", "grid"]
SEARCHES: tuple[SearchName, ...] = ("random", "optuna", "grid")
TOP_LEVEL_KEYS = ("name", "metric", "mode", "search", "num_samples", "seed", "scheduler", "resources", "space")


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping; times are in epochs (one report per validation run). ``max_t`` None = max_epochs."""

    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int | None = None


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: what to search, what to optimise, how to schedule and place trials."""

    name: str
    space: dict[str, Distribution]
    fixed: dict[str, Any]
    metric: str = "val/balanced_acc"
    mode: Literal["max", "min"] = "max"
    search: SearchName = "random"
    num_samples: int = 10
    seed: int | None = None
    scheduler: Asha | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


def check_metric(metric: Any, where: str) -> str:
    """Hyperparameters are selected on validation metrics only: a design rule, not a preference."""
    if not isinstance(metric, str) or not metric.startswith("val/") or metric == "val/":
        raise UserInputError(
            f"{where}: metric={metric!r} must be a validation metric (val/..., e.g. val/balanced_acc): "
            "hyperparameters are never selected on test metrics"
        )
    return metric


def check_grid(space: dict[str, Distribution], where: str) -> None:
    """``search: grid`` runs every combination of the options, so every searched key must be a ``choice``."""
    ranged = [key for key, dist in space.items() if dist.kind != "choice"]
    if ranged:
        raise UserInputError(
            f"{where}: search=grid needs choice([...]) for every searched key; {', '.join(ranged)} "
            "is a range (use search: random or optuna, or list the values)"
        )


def grid_size(space: dict[str, Distribution]) -> int:
    """Trials in one pass over a grid: the product of the option counts."""
    size = 1
    for dist in space.values():
        size *= len(dist.options)
    return size


def _positive_number(value: Any, where: str, key: str, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0 or (integer and value < 1):
        expected = "a positive integer" if integer else "a number >= 0"
        raise UserInputError(f"{where}: {key}={value!r} must be {expected}")
    return value


def _scheduler(value: Any, where: str) -> Asha | None:
    if value is None or value == "none" or (isinstance(value, dict) and value.get("type") == "none"):
        return None
    if value == "asha":
        return Asha()
    if not isinstance(value, dict) or value.get("type") != "asha":
        raise UserInputError(f"{where}: scheduler must be 'none' or a mapping with type: asha (got {value!r})")
    unknown = set(value) - {"type", "grace_period", "reduction_factor", "max_t"}
    if unknown:
        raise UserInputError(
            f"{where}: scheduler has unknown keys {sorted(unknown)} (grace_period, reduction_factor, max_t)"
        )
    grace = _positive_number(value.get("grace_period", 1), where, "scheduler.grace_period", integer=True)
    factor = _positive_number(value.get("reduction_factor", 2), where, "scheduler.reduction_factor")
    if factor <= 1:
        raise UserInputError(f"{where}: scheduler.reduction_factor={factor} must be > 1")
    max_t = value.get("max_t")
    if max_t is not None:
        _positive_number(max_t, where, "scheduler.max_t", integer=True)
        if max_t < grace:
            raise UserInputError(f"{where}: scheduler.max_t={max_t} is below grace_period={grace}")
    return Asha(grace_period=grace, reduction_factor=float(factor), max_t=max_t)


def _resources(value: Any, where: str) -> tuple[float, float]:
    if value is None:
        return 1.0, 0.0
    if not isinstance(value, dict) or set(value) - {"cpu", "gpu"}:
        raise UserInputError(f"{where}: resources must be a mapping with cpu and/or gpu (per trial), got {value!r}")
    cpu = _positive_number(value.get("cpu", 1), where, "resources.cpu")
    gpu = _positive_number(value.get("gpu", 0), where, "resources.gpu")
    if cpu <= 0:
        raise UserInputError(f"{where}: resources.cpu must be > 0")
    return float(cpu), float(gpu)


def parse_sweep(raw: Any, where: str, default_name: str) -> Sweep:
    """A ``Sweep`` from the loaded YAML mapping ``raw``; every problem is one line naming ``where`` and the key."""
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: expected a mapping with at least a 'space' (see configs/sweeps/)")
    unknown = [k for k in raw if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserInputError(f"{where}: unknown keys {unknown} (expected some of: {', '.join(TOP_LEVEL_KEYS)})")
    space, fixed = parse_space(raw.get("space"), where)
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserInputError(f"{where}: mode={mode!r} must be max or min")
    search = raw.get("search", "random")
    if search not in SEARCHES:
        raise UserInputError(f"{where}: search={search!r} must be one of: {', '.join(SEARCHES)}")
    if search == "grid":
        check_grid(space, where)
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserInputError(f"{where}: seed={seed!r} must be an integer")
    cpu, gpu = _resources(raw.get("resources"), where)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise UserInputError(f"{where}: name={name!r} must be a non-empty string without '/'")
    return Sweep(
        name=name,
        space=space,
        fixed=fixed,
        metric=check_metric(raw.get("metric", "val/balanced_acc"), where),
        mode=mode,
        search=search,
        num_samples=_positive_number(raw.get("num_samples", 10), where, "num_samples", integer=True),
        seed=seed,
        scheduler=_scheduler(raw.get("scheduler"), where),
        cpus_per_trial=cpu,
        gpus_per_trial=gpu,
    )


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file."""
    file = Path(path)
    if not file.is_file():
        raise MissingPathError(f"--sweep: {path} does not exist")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise UserInputError(f"sweep file {path}: not valid YAML ({first})") from None
    return parse_sweep(raw, f"sweep file {path}", file.stem)


def with_command_line(
    sweep: Sweep,
    num_samples: int | None = None,
    search: SearchName | None = None,
    seed: int | None = None,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
) -> Sweep:
    """The sweep with the values given on the command line (those not None) replacing the file's."""
    given: dict[str, Any] = {
        "num_samples": num_samples,
        "search": search,
        "seed": seed,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
    }
    for key in ("num_samples", "cpus_per_trial", "gpus_per_trial"):
        if given[key] is not None:
            _positive_number(given[key], "command line", f"--{key}", integer=key == "num_samples")
    if cpus_per_trial is not None and cpus_per_trial <= 0:
        raise UserInputError("command line: --cpus_per_trial must be > 0")
    if search == "grid":
        check_grid(sweep.space, "command line: --search grid")
    return dataclasses.replace(sweep, **{k: v for k, v in given.items() if v is not None})


def pin_overridden_keys(sweep: Sweep, overridden: set[str]) -> tuple[Sweep, list[str]]:
    """Command-line ``--key value`` overrides win over the sweep file: a searched key set there is not searched.

    ``overridden`` holds keys normalised by :func:`normalise_key`. Returns the new sweep and the pinned keys.
    """
    pinned = [k for k in sweep.space if normalise_key(k) in overridden]
    fixed = {k: v for k, v in sweep.fixed.items() if normalise_key(k) not in overridden}
    space = {k: v for k, v in sweep.space.items() if k not in pinned}
    if not space:
        raise UserInputError(f"every searched key of the sweep is fixed on the command line ({', '.join(pinned)})")
    return dataclasses.replace(sweep, space=space, fixed=fixed), pinned


def normalise_key(key: str) -> str:
    """``model.init_args.lr`` and the LightningCLI short form ``model.lr`` name the same key."""
    return key.removeprefix("--").replace(".init_args.", ".")
