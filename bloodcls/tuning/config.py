"""Configs for a sweep: resolve base configs + overrides with the parser of ``bloodcls fit``, make paths absolute,
check every searched key before Ray starts, and turn sampled values into ``--key value`` overrides."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from bloodcls.commands.common import parse_fit_config
from bloodcls.config_paths import resolve_paths
from bloodcls.errors import UserInputError
from bloodcls.tuning.space import probe_values
from bloodcls.tuning.sweep import Sweep


def resolve_config(args: list[str]) -> dict[str, Any]:
    """The full config ``bloodcls fit <args>`` would run (as a plain dict), validated by fit's own parser.

    Raises UserInputError (one line) for unknown keys, bad values, missing config files.
    """
    cli = parse_fit_config(args)
    # skip_unset=False keeps the None values a faithful config needs (``trainer.max_steps: null`` ...).
    return json.loads(cli.parser.dump(cli.config, format="json", skip_unset=False))


def absolute_paths(config: Any, cwd: Path) -> Any:
    """A copy of ``config`` with every relative input path (``config_paths.PATH_KEYS``) made absolute against
    ``cwd``: trials run in their own working directories. Output locations are set per trial instead."""
    out = copy.deepcopy(config)
    resolve_paths(out, str(cwd))
    return out


def cli_value(value: Any) -> str:
    """A Python value as LightningCLI reads it back from the command line."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # a NumPy scalar from a searcher: the plain Python number it stands for
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)  # shortest round-trip text
    return json.dumps(value)  # ints, bools (true/false), None (null), lists, mappings


def overrides(values: dict[str, Any]) -> list[str]:
    """``{"model.init_args.lr": 0.1}`` -> ``["--model.init_args.lr", "0.1"]`` (order kept)."""
    out: list[str] = []
    for key, value in values.items():
        out += [f"--{key}", cli_value(value)]
    return out


def write_config(config: dict[str, Any], path: Path, header: str) -> Path:
    """Write ``config`` as YAML that ``bloodcls fit --config`` accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    path.write_text(f"# {header}\n{text}")
    return path


def check_space_keys(base_config: Path, sweep: Sweep, where: str) -> None:
    """Every searched key, at its bounds (or every option), and the fixed values, as fit's parser sees them.

    Runs before Ray starts so a misspelt key or a value of the wrong type is one line, not N failed trials.
    """
    base = ["--config", str(base_config)]
    fixed = overrides(sweep.fixed)
    try:
        resolve_config([*base, *fixed])
    except UserInputError as err:
        raise UserInputError(f"{where}: space (fixed values): {err}") from None
    for key, dist in sweep.space.items():
        for value in probe_values(dist):
            try:
                resolve_config([*base, *fixed, *overrides({key: value})])
            except UserInputError as err:
                raise UserInputError(f"{where}: space.{key}={cli_value(value)}: {err}") from None


def max_epochs(config: dict[str, Any]) -> int | None:
    """``trainer.max_epochs`` of a resolved config (None when training is bounded otherwise)."""
    value = (config.get("trainer") or {}).get("max_epochs")
    return value if isinstance(value, int) and value > 0 else None
