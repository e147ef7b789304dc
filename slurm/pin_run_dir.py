"""Pin a resolved ``bloodcls fit`` config (``--print_config`` on stdin) to one run directory, for slurm/*.sbatch.

The Slurm scripts need the same run directory in every attempt of a job (Lightning writes the auto-requeue
checkpoint ``hpc_ckpt_N.ckpt`` into ``trainer.default_root_dir`` and resumes from it). Command-line overrides
such as ``--trainer.logger.init_args.version`` cannot reach a logger inside a list (a config composed with
``configs/loggers/wandb.yaml`` has ``[CSVLogger, WandbLogger]``), so the scripts resolve the config once and edit
it here: the first CSV / TensorBoard logger gets ``save_dir/name/version``, ``trainer.default_root_dir`` becomes
that directory, and a W&B logger without an id gets a stable one, so a requeued job continues the same W&B run.

    bloodcls fit ARGS --print_config | python slurm/pin_run_dir.py --save_dir runs --name quickstart \
        --version job123 --wandb_id quickstart-job123 > fit.yaml
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import yaml

RUN_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger")  # loggers whose save_dir/name/version is the run directory


def _logger_specs(trainer: dict[str, Any]) -> list[dict[str, Any]]:
    logger = trainer.get("logger")
    items = logger if isinstance(logger, list) else [logger]
    return [item for item in items if isinstance(item, dict) and item.get("class_path")]


def wandb_safe_id(text: str) -> str:
    """W&B run ids may not contain / \\ # ? % : and spaces; anything but letters, digits, - and _ becomes -."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def pin_run_dir(config: dict[str, Any], save_dir: str, name: str, version: str, wandb_id: str) -> str:
    """Edit ``config`` in place so the run lives in ``save_dir/name/version``; returns that directory."""
    trainer = config.setdefault("trainer", {})
    specs = _logger_specs(trainer)
    run_loggers = [s for s in specs if str(s["class_path"]).endswith(RUN_DIR_LOGGERS)]
    if not run_loggers:
        raise ValueError(
            "trainer.logger has no CSVLogger: the Slurm scripts keep checkpoints and the requeue checkpoint in "
            "its run directory (add the CSVLogger back, e.g. from configs/quickstart.yaml)"
        )
    init_args = run_loggers[0].setdefault("init_args", {}) or {}
    run_loggers[0]["init_args"] = init_args
    init_args.update(save_dir=save_dir, name=name, version=version)
    run_dir = f"{save_dir}/{name}/{version}"
    trainer["default_root_dir"] = run_dir
    for spec in specs:
        if str(spec["class_path"]).endswith("WandbLogger"):
            args = spec.setdefault("init_args", {}) or {}
            spec["init_args"] = args
            if not args.get("id") and not args.get("version"):
                args["id"] = wandb_safe_id(wandb_id)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pin_run_dir.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--save_dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--wandb_id", required=True, help="W&B run id when a W&B logger has none")
    args = parser.parse_args(argv)
    config = yaml.safe_load(sys.stdin)
    if not isinstance(config, dict):
        print(
            "pin_run_dir.py: error: stdin is not a bloodcls config (run bloodcls fit ... --print_config)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        pin_run_dir(config, args.save_dir, args.name, args.version, args.wandb_id)
    except ValueError as err:
        print(f"pin_run_dir.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
