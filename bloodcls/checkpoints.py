"""Reading checkpoint and weights files safely (plain tensors and data only, never unpickled code), one-line errors."""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloodcls.errors import MissingPathError, UserInputError

CKPT_KEY = "--ckpt_path"
ENSEMBLE_KEY = "ensemble"  # test / predict: more checkpoints averaged with --ckpt_path's
# ckpt_path values Lightning resolves itself instead of naming a file.
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
EVALUATE_COMMANDS = ("validate", "test", "predict")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_LAST = re.compile(r"^last")  # Lightning's test for a last checkpoint's stem: last.ckpt, last-v1.ckpt, ...


def _unsafe_globals(path: Path, err: BaseException) -> list[str]:
    """The non-allow-listed globals ``path``'s pickle references (what it would import and call if unpickled)."""
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: fall back to the one torch's error names
        return _GLOBAL.findall(str(err))[:1]


def load_checkpoint(path: str | Path, key: str = CKPT_KEY) -> dict[str, Any]:
    """The contents of the checkpoint ``path`` (a dict), loaded with ``weights_only=True``: tensors, containers and
    plain values only. Raises a one-line ``UserInputError`` naming ``key`` for a missing file, a file that is not a
    (complete) checkpoint, and a file whose pickle would import and call arbitrary objects -- which is refused,
    never executed."""
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingPathError(f"{key}: checkpoint {file} does not exist")
    try:
        # Explicit weights_only=True: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off (it only changes the default).
        contents = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(file, err)
        if unsafe:
            raise UserInputError(
                f"{key}: refusing to unpickle arbitrary objects from {file}: it references {', '.join(unsafe)} "
                "(a checkpoint may hold only tensors and plain data)"
            ) from None
        raise UserInputError(f"{key}: {file} is not a readable checkpoint (not a file written by torch.save)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        # torch's first sentence names the failure ("... failed finding central directory"); the rest is advice.
        reason = (str(err).splitlines() or [""])[0].split(". ")[0] or type(err).__name__
        raise UserInputError(
            f"{key}: {file} is not a readable checkpoint (truncated or corrupt: {reason[:100]})"
        ) from None
    if not isinstance(contents, dict):
        raise UserInputError(f"{key}: {file} is not a checkpoint (it holds a {type(contents).__name__}, not a dict)")
    return contents


@dataclass(frozen=True)
class CheckpointSummary:
    """What the CLI checks about a checkpoint before Lightning loads it."""

    path: str
    num_classes: int | None
    class_names: list[str] | None
    resumable: bool  # has optimizer state (a full checkpoint, not a weights-only one)
    image_size: int | None = None  # the datamodule's input size, when recorded
    center_crop: float = 1.0  # the datamodule's data.center_crop (1: whole images; older checkpoints)


_summaries: dict[tuple[str, int, int], CheckpointSummary] = {}


def summarize_checkpoint(path: str | Path, key: str = CKPT_KEY) -> CheckpointSummary:
    """``load_checkpoint``'s checks, remembered per file version: the CLI checks the same file at several points."""
    file = Path(path).expanduser()
    stat = file.stat() if file.is_file() else None
    cache_key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size) if stat else None
    if cache_key is not None and cache_key in _summaries:
        return _summaries[cache_key]
    contents = load_checkpoint(file, key)
    hparams = contents.get("hyper_parameters") or {}
    names = hparams.get("class_names")
    num = hparams.get("num_classes")
    data_hparams = contents.get("datamodule_hyper_parameters") or {}
    size = data_hparams.get("image_size")
    crop = data_hparams.get("center_crop", 1.0)
    summary = CheckpointSummary(
        path=str(file),
        num_classes=int(num) if isinstance(num, int) else None,
        class_names=[str(n) for n in names] if isinstance(names, (list, tuple)) else None,
        resumable="optimizer_states" in contents,
        image_size=size if isinstance(size, int) else None,
        center_crop=float(crop) if isinstance(crop, int | float) else 1.0,
    )
    if cache_key is not None:
        _summaries[cache_key] = summary
    return summary


def _argv_value(args: Sequence[str], option: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{option}="):
            value = arg.split("=", 1)[1]
    return value


def check_checkpoint_argv(args: Sequence[str]) -> None:
    """A ``--ckpt_path FILE`` on a ``bloodcls <subcommand>`` command line exists and is a safe checkpoint; checked
    before parsing, so a missing file is named as such (not as the missing ``--config`` it implies)."""
    if not args or args[0] not in ("fit", *EVALUATE_COMMANDS):
        return
    ckpt = _argv_value(args[1:], CKPT_KEY)
    if ckpt and ckpt not in SPECIAL_CKPT_PATHS and ckpt.lower() not in ("none", "null"):
        summarize_checkpoint(ckpt)


def check_checkpoint_config(config: Any) -> None:
    """After parsing, before Lightning reads any checkpoint: evaluating needs a checkpoint, and every checkpoint the
    parsed configuration names (``ckpt_path``, ``model.backbone_checkpoint``) is a safe, suitable file."""
    subcommand = config.get("subcommand") if hasattr(config, "get") else None
    if not subcommand:
        return
    sub = config[subcommand]
    ckpt = sub.get("ckpt_path")
    if subcommand in EVALUATE_COMMANDS:
        if not ckpt:
            raise UserInputError(
                f"bloodcls {subcommand} needs --ckpt_path (e.g. RUN/checkpoints/best.ckpt): without one the network "
                "is untrained"
            )
        if str(ckpt) in SPECIAL_CKPT_PATHS:
            raise UserInputError(
                f"{CKPT_KEY} {ckpt}: means a checkpoint of a fit in the same process; give the file, e.g. "
                f"RUN/checkpoints/{ckpt}.ckpt"
            )
    if ckpt and str(ckpt) not in SPECIAL_CKPT_PATHS:
        summary = summarize_checkpoint(str(ckpt))
        if subcommand == "fit":
            check_resumable(summary)
    check_ensemble_config(subcommand, sub)
    model_args = (sub.get("model") or {}).get("init_args") or {}
    backbone_ckpt = model_args.get("backbone_checkpoint") if hasattr(model_args, "get") else None
    if backbone_ckpt:
        summarize_checkpoint(str(backbone_ckpt), "model.backbone_checkpoint")


def check_checkpoint_fits(subcommand: str | None, config: Any, model: Any, trainer: Any) -> None:
    """After the classes are built, before Lightning restores the checkpoint: it was trained for the classes the data
    has, and ``fit --ckpt_path last`` finds a last checkpoint (Lightning would warn and silently start afresh)."""
    if not subcommand:
        return
    ckpt = config[subcommand].get("ckpt_path")
    if not ckpt:
        return
    if subcommand == "fit" and str(ckpt) == "last":
        ckpt = find_last_checkpoint(trainer)
    if str(ckpt) in SPECIAL_CKPT_PATHS:
        return
    summary = summarize_checkpoint(str(ckpt))
    if subcommand == "fit":
        check_resumable(summary)
    check_classes_fit(summary, int(model.num_classes), list(model.class_names))


def check_ensemble_config(subcommand: str, sub: Any) -> None:
    """``--ensemble`` members (test / predict) are safe checkpoints of ``--ckpt_path``'s classes and image size."""
    from bloodcls.inference.ensemble import check_compatible

    members = [str(p) for p in (sub.get(ENSEMBLE_KEY) if hasattr(sub, "get") else None) or []]
    if not members:
        return
    if subcommand not in EVALUATE_COMMANDS:
        raise UserInputError(f"--{ENSEMBLE_KEY}: only bloodcls validate, test and predict evaluate ensembles")
    summaries = [summarize_checkpoint(str(sub.get("ckpt_path")))]
    summaries += [summarize_checkpoint(p, f"--{ENSEMBLE_KEY}") for p in members]
    check_compatible(
        [s.path for s in summaries],
        [s.class_names for s in summaries],
        [s.image_size for s in summaries],
        [s.center_crop for s in summaries],
    )
    if subcommand in SCORED_SUBSET:
        data_args = (sub.get("data") or {}).get("init_args") or {}
        split_file = data_args.get("split_file") if hasattr(data_args, "get") else None
        check_members_never_trained_on_the_scored_images(
            [s.path for s in summaries], SCORED_SUBSET[subcommand], str(split_file) if split_file else None
        )


def _split_of(path: str) -> dict[str, str]:
    """content hash -> subset of the split a checkpoint travels with (empty when it has none)."""
    state = load_checkpoint(path).get("BloodCellDataModule") or {}
    split = state.get("split") or {}
    return dict(zip(split.get("hash") or [], split.get("subset") or [], strict=False))


# The split subset each evaluating command scores, and the subsets an ensemble member may not have used those images
# for. Choosing a checkpoint on validation images is what a validated single model does too, so ``validate`` allows
# it; ``test`` scores images no member may have seen at all.
SCORED_SUBSET = {"validate": "val", "test": "test"}
_FORBIDDEN_FOR = {"val": ("train", "unlabeled"), "test": ("train", "val", "unlabeled")}


def _scored_hashes(paths: list[str], subset: str, split_file: str | None) -> set[str]:
    """The images ``bloodcls validate`` / ``test`` score (``subset``: ``val`` / ``test``): ``split_file``'s rows of
    that subset when given (and readable), else those of the split the first checkpoint travels with."""
    if split_file is not None:
        from bloodcls.data.split_plan import SavedSplit

        try:
            saved = SavedSplit.from_csv(split_file)
        except (OSError, UserInputError, ValueError, KeyError):
            return set()  # the datamodule names a bad split file itself
        return {h for h, s in zip(saved.hashes, saved.subsets, strict=True) if s == subset}
    return {h for h, s in _split_of(paths[0]).items() if s == subset}


def check_members_never_trained_on_the_scored_images(
    paths: list[str], subset: str = "test", split_file: str | None = None
) -> None:
    """``bloodcls test`` (``validate``) of an ensemble scores the first checkpoint's test (validation) split, or
    ``split_file``'s: refuse when any member trained on one of those images -- e.g. the folds of a k-fold run, where
    each image is in the training data of every fold but one -- or, for test, selected its checkpoint with one."""
    scored = _scored_hashes(paths, subset, split_file)
    forbidden = _FORBIDDEN_FOR[subset]
    used = "trained or validated on" if "val" in forbidden else "trained on"
    name = "test" if subset == "test" else "validation"
    for path in paths if split_file is not None else paths[1:]:
        seen = sum(1 for h, s in _split_of(path).items() if h in scored and s in forbidden)
        if seen:
            raise UserInputError(
                f"ensemble member {path} {used} {seen} of the {len(scored)} {name} images "
                f"({split_file or paths[0]}): evaluate this ensemble on images none of its members trained on "
                "(--data.init_args.split_file naming a held-out set, or bloodcls predict on new images)"
            )


def check_ensemble_fits(subcommand: str | None, config: Any, model: Any) -> None:
    """Every ``--ensemble`` member was trained for the classes the data has (as ``--ckpt_path`` is)."""
    if subcommand not in EVALUATE_COMMANDS:
        return
    for path in config[subcommand].get(ENSEMBLE_KEY) or []:
        check_classes_fit(
            summarize_checkpoint(str(path), f"--{ENSEMBLE_KEY}"), int(model.num_classes), list(model.class_names)
        )


def check_resumable(summary: CheckpointSummary) -> None:
    """A fit resumes only from a full checkpoint (weights, optimizer, loops, callbacks): ``last.ckpt``."""
    if not summary.resumable:
        raise UserInputError(
            f"{CKPT_KEY}: {summary.path} holds weights only (no optimizer state), so a fit cannot resume from it; "
            f"resume from RUN/checkpoints/last.ckpt, or start from these weights with "
            f"--model.init_args.backbone_checkpoint {summary.path}"
        )


def check_classes_fit(summary: CheckpointSummary, num_classes: int, class_names: list[str]) -> None:
    """The checkpoint's classifier has ``num_classes`` outputs named ``class_names`` (the data's)."""
    if summary.num_classes is not None and summary.num_classes != num_classes:
        raise UserInputError(
            f"{CKPT_KEY}: {summary.path} was trained for {summary.num_classes} classes, but the data has {num_classes} "
            f"({', '.join(class_names)})"
        )
    if summary.class_names is not None and summary.class_names != class_names:
        raise UserInputError(
            f"{CKPT_KEY}: {summary.path} was trained on classes {summary.class_names}, but the data has {class_names}"
        )


def checkpoint_dir(callback: Any, trainer: Any) -> Path:
    """Where ``callback`` (a ModelCheckpoint) writes, resolved as Lightning does at setup: its ``dirpath``, else
    ``<first logger's save_dir>/<name>/<version>/checkpoints``, else ``<default_root_dir>/checkpoints``."""
    if callback.dirpath is not None:
        return Path(callback.dirpath)
    if trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        return Path(save_dir) / str(logger.name) / version / "checkpoints"
    return Path(trainer.default_root_dir) / "checkpoints"


def find_last_checkpoint(trainer: Any) -> str:
    """The newest ``last*.ckpt`` in the fit's checkpoint directories (what Lightning resumes from for
    ``ckpt_path="last"``), or a one-line error naming where it looked."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirs = list(
        dict.fromkeys(
            checkpoint_dir(c, trainer) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)
        )
    )
    found = [p for d in dirs if d.is_dir() for p in d.iterdir() if p.suffix == ".ckpt" and _LAST.match(p.stem)]
    if not found:
        where = ", ".join(str(d) for d in dirs) or "no checkpoint directory (checkpointing is off)"
        raise UserInputError(
            f"{CKPT_KEY} last: no last checkpoint in {where}; name the file (--ckpt_path RUN/checkpoints/last.ckpt) "
            "or the run to resume (--trainer.logger.init_args.version N)"
        )
    return str(max(found, key=lambda p: p.stat().st_mtime))
