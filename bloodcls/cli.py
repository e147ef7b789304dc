"""The ``bloodcls`` command: LightningCLI subcommands (fit / validate / test / predict) plus bloodcls tools."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.callbacks.checkpointing import BEST_KEY, add_checkpoint_arguments
from bloodcls.callbacks.reports import PredictionsCSV, TestReport
from bloodcls.callbacks.run_files import RunFiles
from bloodcls.callbacks.wandb import SaveConfigToLoggers, fill_wandb_defaults, logger_specs
from bloodcls.commands.common import quiet_third_party_noise, user_errors
from bloodcls.data.datamodule import DEFAULT_IMAGE_SIZE, BloodCellDataModule
from bloodcls.errors import UserInputError
from bloodcls.loggers import CSVLogger
from bloodcls.models import pretrained_input_size
from bloodcls.strategies.base import Classifier

TRAINER_COMMANDS: dict[str, str] = {
    "fit": "train a model (writes checkpoints, split.csv and logs into the run directory)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the held-out test split and write the report",
    "predict": "classify a folder of images and write predictions.csv",
}


# Tool commands: bloodcls.commands.<name>.main(argv), imported only when run, so ``bloodcls fit`` never pays for Ray,
# ONNX or scikit-image.
TOOL_COMMANDS: dict[str, str] = {
    "download": "fetch a dataset (bloodmnist) or a checksummed zip URL into a folder",
    "baseline": "classical baseline: segmentation + hand-crafted features + SVM / random forest",
    "tune": "Ray Tune sweep over any config key (--config base.yaml --sweep sweep.yaml)",
    "export": "export a checkpoint to ONNX (with an ONNX Runtime parity check)",
    "summarize": "mean +- std of test metrics over runs (k-fold folds, seeds)",
}


def run_tool(command: str, argv: list[str]) -> None:
    """Run the tool command ``command`` (a key of ``TOOL_COMMANDS``) on ``argv``."""
    importlib.import_module(f"bloodcls.commands.{command}").main(argv)


class BloodCLI(LightningCLI):
    """LightningCLI with bloodcls defaults: strategies and datamodule by ``class_path``, class count and names
    linked from the data to the model, best-on-validation and last checkpoints, the run's split files, test report
    and predictions writer."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=Classifier,
            datamodule_class=BloodCellDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            save_config_callback=SaveConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": lazy_instance(CSVLogger, save_dir="runs", name="bloodcls"),
                "callbacks": [lazy_instance(RichProgressBar)],
            },
            parser_kwargs={"description": "bloodcls: blood-cell classifiers from few labels"},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        add_checkpoint_arguments(parser)
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(PredictionsCSV, "predictions")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # The rich progress bar is a default, not a requirement: drop it when the user turns progress bars off
        # or brings their own, instead of failing on Lightning's "found a progress bar" check.
        user_callbacks = config.get("callbacks") or []
        own_bar = any(isinstance(c, ProgressBar) for c in [*callbacks, *user_callbacks])
        if config.get("enable_progress_bar") is False or own_bar:
            self.trainer_defaults = {k: v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        # split.csv / data_report.json of every fit run; not a config key: there is nothing to configure.
        return super()._instantiate_trainer(config, [*callbacks, RunFiles()])

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        checkpoint: Any = config.get(BEST_KEY) or {}
        monitor = checkpoint.get("monitor")
        if monitor and not str(monitor).startswith(("val/", "train/")):
            raise UserInputError(
                f"checkpoint.monitor={monitor}: checkpoints are selected on validation metrics (val/...), "
                "never on test metrics"
            )
        if checkpoint.get("save_last"):
            # Configs saved before last.ckpt had its own callback say save_last: true; honoured, it would write a
            # second, stale last(-v1).ckpt beside last_checkpoint's.
            checkpoint.save_last = None
        _resolve_image_size(config)
        fill_wandb_defaults(config, self.subcommand)
        if self.subcommand in ("validate", "test", "predict"):
            self._log_next_to_checkpoint(config)

    def _log_next_to_checkpoint(self, config: object) -> None:
        """Evaluating a checkpoint writes into ``<its run dir>/<subcommand>/`` instead of a new version dir."""
        ckpt_path = config.get("ckpt_path")  # type: ignore[attr-defined]
        if not ckpt_path or Path(ckpt_path).parent.name != "checkpoints":
            return
        ckpt = Path(ckpt_path)
        # A W&B logger alongside keeps its own place: a new run "<name>-<subcommand>" in the fit run's group.
        for logger in logger_specs(config):
            if "CSVLogger" in str(logger.class_path):
                logger.init_args.save_dir = str(ckpt.parent.parent)
                logger.init_args.name = ""
                logger.init_args.version = self.subcommand


def _resolve_image_size(config: Any) -> None:
    """``data.image_size: null`` becomes the backbone's pretrained input size when the model loads pretrained
    weights (timm's pretrained config; normalisation comes from the same config), else the datamodule default.
    Resolved before instantiation, so the saved config.yaml -- and ``bloodcls test`` on it -- has the number."""
    data_args = (config.get("data") or {}).get("init_args")
    model_args = (config.get("model") or {}).get("init_args")
    if data_args is None or model_args is None or "image_size" not in data_args:
        return
    pretrained = bool(model_args.get("pretrained") or model_args.get("pretrained_weights"))
    backbone = str(model_args.get("backbone") or "")
    native = pretrained_input_size(backbone) if pretrained else None
    if data_args.image_size is None:
        data_args.image_size = native or DEFAULT_IMAGE_SIZE
    elif native is not None and native != data_args.image_size:
        rank_zero_info(
            f"bloodcls: {backbone}'s pretrained weights were trained at {native} px; using data.image_size="
            f"{data_args.image_size} (data.image_size null uses {native} px)"
        )


def _print_overview() -> None:
    width = max(len(n) for n in [*TRAINER_COMMANDS, *TOOL_COMMANDS]) + 2
    lines = [
        "usage: bloodcls <command> [options]",
        "",
        "bloodcls: blood-cell classifiers from few labels (PyTorch Lightning).",
        "",
        "training commands (LightningCLI; --config file.yaml, repeatable, --print_config, --key value):",
        *[f"  {name:<{width}}{text}" for name, text in TRAINER_COMMANDS.items()],
        "",
        "tools:",
        *[f"  {name:<{width}}{text}" for name, text in TOOL_COMMANDS.items()],
        "",
        "Run `bloodcls <command> --help` for a command's options.",
        "Example: bloodcls fit --config configs/quickstart.yaml",
    ]
    print("\n".join(lines))


def _config_from_checkpoint(args: list[str]) -> list[str]:
    """``bloodcls test --ckpt_path RUN/checkpoints/best.ckpt`` without ``--config`` reuses RUN/config.yaml."""
    if any(a == "--config" or a.startswith("--config=") or a in ("-h", "--help") for a in args):
        return args
    ckpt = None
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            ckpt = args[i + 1]
        elif arg.startswith("--ckpt_path="):
            ckpt = arg.split("=", 1)[1]
    if ckpt is None:
        return args
    config = Path(ckpt).parent.parent / "config.yaml"
    if Path(ckpt).parent.name == "checkpoints" and config.is_file():
        print(f"bloodcls: using {config} (the run's saved configuration)", file=sys.stderr)
        return ["--config", str(config), *args]
    return args


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; returns None so the process exit status is 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        _print_overview()
        return
    if args[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"bloodcls {version('bloodcls')}")
        return
    command, rest = args[0], args[1:]
    if command in TOOL_COMMANDS:
        run_tool(command, rest)
        return
    if command not in TRAINER_COMMANDS:
        known = ", ".join([*TRAINER_COMMANDS, *TOOL_COMMANDS])
        print(f"bloodcls: error: unknown command '{command}' (expected one of: {known})", file=sys.stderr)
        raise SystemExit(2)
    if command in ("validate", "test", "predict"):
        rest = _config_from_checkpoint(rest)
    quiet_third_party_noise()
    # LightningCLI reads sys.argv (passing args as well makes it warn), so hand it the rewritten command line --
    # and put the caller's back afterwards: main([...]) is also called in-process (tests, Ray Tune trials).
    saved_argv = sys.argv
    sys.argv = [sys.argv[0] if sys.argv else "bloodcls", command, *rest]
    try:
        with user_errors(f"bloodcls {command}"):
            BloodCLI()
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
