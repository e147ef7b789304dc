"""Which config values are paths, and the rule that resolves them: against the config file that names them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

# Inputs a run reads: a relative value in a config file means "next to this config file", so a config (and a run's
# saved config.yaml, which stores them absolute) works from any directory. Output locations -- the logger's
# save_dir, trainer.default_root_dir -- are not here: they stay relative to the directory bloodcls runs in, so
# `runs/...` lands where the README says. A `--key value` on the command line is relative to that directory too.
PATH_KEYS = frozenset(
    {"root", "cache_dir", "split_file", "predict_root", "unlabeled_root", "pretrained_weights", "backbone_checkpoint"}
)
PATH_SECTIONS = ("data", "model")  # only keys under these sections: `root` elsewhere means something else


def absolute(value: str, base: str) -> str:
    """``value`` made absolute against the directory ``base`` (``~`` expanded; URLs and absolute paths kept)."""
    if "://" in value:
        return value
    expanded = os.path.expanduser(value)
    return os.path.normpath(expanded if os.path.isabs(expanded) else os.path.join(base, expanded))


def _items(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        yield from node.items()
    elif hasattr(node, "__dict__") and hasattr(node, "get"):  # a jsonargparse Namespace
        yield from vars(node).items()


def _set(node: Any, key: str, value: Any) -> None:
    if isinstance(node, dict):
        node[key] = value
    else:
        setattr(node, key, value)


def resolve_paths(node: Any, base: str) -> None:
    """Make every relative path value under a ``PATH_KEYS`` key absolute against ``base``, in place."""
    for key, value in list(_items(node)):
        if key in PATH_KEYS and isinstance(value, str) and value:
            _set(node, key, absolute(value, base))
        elif isinstance(value, list):
            for item in value:
                resolve_paths(item, base)
        else:
            resolve_paths(value, base)


def resolve_config_paths(config: Any, base: str) -> None:
    """``resolve_paths`` on the ``data`` and ``model`` sections of a parsed config (a Namespace or dict)."""
    for section, value in list(_items(config)):
        if section in PATH_SECTIONS:
            resolve_paths(value, base)


def absolute_path_args(args: list[str], base: str) -> list[str]:
    """Command-line ``--data...root REL`` / ``--model...backbone_checkpoint=REL`` (a ``PATH_KEYS`` key under ``data`` or
    ``model``) with the value made absolute against ``base`` (the cwd), as soon as it is read.

    Resolving them only after parsing is too late: a ``--config`` file given after them re-resolves the values it
    inherits against its own folder (``--data.root ../x --config configs/strategies/y.yaml`` read
    ``configs/x``).
    """
    out = list(args)
    for i, arg in enumerate(out):
        key, eq, value = arg.partition("=")
        if not _is_path_flag(key):
            continue
        if eq:
            out[i] = f"{key}={_absolute_arg(value, base)}"
        elif i + 1 < len(out) and not out[i + 1].startswith("--"):
            out[i + 1] = _absolute_arg(out[i + 1], base)
    return out


def _is_path_flag(flag: str) -> bool:
    parts = flag.removeprefix("--").split(".")
    return flag.startswith("--") and len(parts) > 1 and parts[0] in PATH_SECTIONS and parts[-1] in PATH_KEYS


def _absolute_arg(value: str, base: str) -> str:
    return value if value in ("", "null", "None") else absolute(value, base)
