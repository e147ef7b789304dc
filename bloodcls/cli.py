"""The ``bloodcls`` command: LightningCLI subcommands (fit / validate / test / predict) plus bloodcls tools."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from bloodcls.allocator import keep_freed_memory
from bloodcls.callbacks.checkpointing import BEST_KEY, add_checkpoint_arguments
from bloodcls.callbacks.console import CompactModelSummary, CompactProgressBar
from bloodcls.callbacks.finite_loss import FINITE_LOSS_KEY, FiniteLoss, add_finite_loss_argument
from bloodcls.callbacks.reports import PredictionsCSV, TestReport
from bloodcls.callbacks.run_files import RunFiles
from bloodcls.callbacks.wandb import SaveConfigToLoggers, fill_wandb_defaults, logger_specs
from bloodcls.commands.common import quiet_third_party_noise, user_errors
from bloodcls.config_paths import resolve_config_paths
from bloodcls.console import ignore_sigusr1_outside_slurm, quiet_console
from bloodcls.data.datamodule import DEFAULT_IMAGE_SIZE, BloodCellDataModule
from bloodcls.entry import TOOL_COMMANDS, TRAINER_COMMANDS, run_tool
from bloodcls.entry import main as entry_main
from bloodcls.errors import UserInputError
from bloodcls.loggers import CSVLogger
from bloodcls.models import pretrained_input_size
from bloodcls.parser import BloodArgumentParser
from bloodcls.run_versions import OVERWRITE_KEY, add_overwrite_argument, check_run_dir, remove_if_left_empty
from bloodcls.strategies.base import Classifier
from bloodcls.threads import accelerator_is_gpu, apply_thread_count, auto_loader_workers, available_cpus

__all__ = ["TOOL_COMMANDS", "TRAINER_COMMANDS", "BloodCLI", "main", "run_tool"]


class BloodCLI(LightningCLI):
    """LightningCLI with bloodcls defaults: strategies and datamodule by ``class_path``, class count and names
    linked from the data to the model, best-on-validation and last checkpoints, the run's split files, test report
    and predictions writer."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=Classifier,
            parser_class=BloodArgumentParser,
            datamodule_class=BloodCellDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            save_config_callback=SaveConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "logger": lazy_instance(CSVLogger, save_dir="runs", name="bloodcls"),
                "callbacks": [lazy_instance(CompactProgressBar)],
            },
            parser_kwargs={"description": "bloodcls: blood-cell classifiers from few labels"},
            args=args,
            run=run,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Every checkpoint named is checked and safe-loaded (weights_only) before Lightning reads it.
        from bloodcls.checkpoints import check_checkpoint_argv, check_checkpoint_config

        check_checkpoint_argv(sys.argv[1:] if args is None else args if isinstance(args, list) else [])
        super().parse_arguments(parser, args)
        check_checkpoint_config(self.config)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        add_checkpoint_arguments(parser)
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(PredictionsCSV, "predictions")
        add_finite_loss_argument(parser)
        add_overwrite_argument(parser)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":
            # One results table per run: the test report's (bloodcls), not also Lightning's raw one. validate has
            # no report of its own, so it keeps Lightning's table: the numbers a user ran it for.
            parser.set_defaults({"verbose": False})
        if subcommand in INFERENCE_COMMANDS:
            add_inference_arguments(parser)
        return parser

    def instantiate_classes(self) -> None:
        apply_thread_count(self._get(self.config, "data") or {})
        keep_freed_memory()  # activations reuse heap pages instead of page-faulting fresh ones every step
        super().instantiate_classes()
        from bloodcls.checkpoints import check_checkpoint_fits, check_ensemble_fits

        check_checkpoint_fits(self.subcommand, self.config, self.model, self.trainer)
        check_ensemble_fits(self.subcommand, self.config, self.model)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            # A run that failed before it had anything to keep leaves no version_N folder behind.
            remove_if_left_empty(getattr(self, "trainer", None))
            raise

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # The rich progress bar is a default, not a requirement: drop it when the user turns progress bars off
        # or brings their own, instead of failing on Lightning's "found a progress bar" check.
        user_callbacks = config.get("callbacks") or []
        own_bar = any(isinstance(c, ProgressBar) for c in [*callbacks, *user_callbacks])
        if config.get("enable_progress_bar") is False or own_bar:
            self.trainer_defaults = {k: v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        # split.csv / data_report.json of every fit run; not a config key: there is nothing to configure.
        extra: list[Callback] = [RunFiles()]
        if self.subcommand == "fit" and self._get(self.config, FINITE_LOSS_KEY, default=True):
            extra.append(FiniteLoss())
        extra.extend(inference_callbacks(self.subcommand, self.config))
        if config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in [*callbacks, *user_callbacks]
        ):
            extra.append(CompactModelSummary())
        return super()._instantiate_trainer(config, [*callbacks, *extra])

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
        _resolve_num_workers(config)
        # Paths from the command line are relative to the cwd (config files' were resolved against their folder):
        # absolute from here on, so the run's saved config.yaml works from any directory.
        resolve_config_paths(config, os.getcwd())
        fill_wandb_defaults(config, self.subcommand)
        if self.subcommand == "fit":
            check_run_dir(config, overwrite=bool(config.get(OVERWRITE_KEY)))
        if self.subcommand in ("validate", "test", "predict"):
            self._log_next_to_checkpoint(config)

    def _log_next_to_checkpoint(self, config: object) -> None:
        """Evaluating a checkpoint writes into ``<its run dir>/<subcommand>/`` instead of a new version dir."""
        ckpt_path = config.get("ckpt_path")  # type: ignore[attr-defined]
        if not ckpt_path or Path(ckpt_path).parent.name != "checkpoints":
            return
        ckpt = Path(ckpt_path)
        # An ensemble's report must not replace the first member's own test report.
        version = f"{self.subcommand}_ensemble" if config.get(ENSEMBLE_KEY) else self.subcommand  # type: ignore[attr-defined]
        # A W&B logger alongside keeps its own place: a new run "<name>-<subcommand>" in the fit run's group.
        for logger in logger_specs(config):
            if "CSVLogger" in str(logger.class_path):
                logger.init_args.save_dir = str(ckpt.parent.parent)
                logger.init_args.name = ""
                logger.init_args.version = version


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


def _resolve_num_workers(config: Any) -> None:
    """``data.num_workers: null`` becomes ``auto_loader_workers`` for this machine and accelerator, before the
    thread count is chosen from it; the saved config.yaml records the number."""
    data_args = (config.get("data") or {}).get("init_args")
    if data_args is None or "num_workers" not in data_args or data_args.num_workers is not None:
        return
    trainer = config.get("trainer") or {}
    data_args.num_workers = auto_loader_workers(available_cpus(), accelerator_is_gpu(trainer.get("accelerator")))


# ------------------------------------------------------------------ validate / test / predict: --tta and --ensemble
# validate takes them too, so TTA and ensembles are chosen on the validation split before test is read.
INFERENCE_COMMANDS = ("validate", "test", "predict")
TTA_KEY, ENSEMBLE_KEY = "tta", "ensemble"


def add_inference_arguments(parser: LightningArgumentParser) -> None:
    """``--tta none|d4`` (default: the checkpoint's own setting) and ``--ensemble CKPT [CKPT ...]`` (more
    checkpoints of the same classes and image size, averaged with ``--ckpt_path``'s model)."""
    from bloodcls.inference import TTA_MODES, TTAMode

    parser.add_argument(
        f"--{TTA_KEY}",
        type=TTAMode | None,
        default=None,
        help=f"test-time augmentation ({' | '.join(TTA_MODES)}); default: the checkpoint's (none unless set)",
    )
    parser.add_argument(
        f"--{ENSEMBLE_KEY}",
        type=str,
        nargs="+",
        default=None,
        metavar="CKPT",
        help="more checkpoints of the same classes: probabilities are averaged with --ckpt_path's model, each "
        "member with its own temperature, normalisation and TTA",
    )


def inference_callbacks(subcommand: str | None, config: Any) -> list[Callback]:
    """The callback that applies ``--tta`` / ``--ensemble`` after the checkpoint is restored (validate, test,
    predict)."""
    if subcommand not in INFERENCE_COMMANDS:
        return []
    from bloodcls.callbacks.inference_overrides import InferenceOverrides

    sub = config[subcommand]
    members = [str(Path(p).expanduser().resolve()) for p in sub.get(ENSEMBLE_KEY) or []]
    return [InferenceOverrides(sub.get("ckpt_path"), sub.get(TTA_KEY), members)]


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


def _class_map_args(args: list[str]) -> list[str]:
    """``--class_map MAP`` (external-lab evaluation) becomes ``data.class_map`` plus ``data.model_classes`` read from
    the checkpoint; the report goes to ``RUN/test_<external folder>/`` so the run's own test report stays."""
    rest: list[str] = []
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        if key in ("--class_map", "--ckpt_path", "--data.root", "--data.init_args.root"):
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
            values[key.replace("init_args.", "")] = value
            if key == "--class_map":
                i += 1 if eq else 2  # consumed here: LightningCLI does not know the flag
                continue
        rest.append(args[i])
        i += 1
    class_map, ckpt, root = values.get("--class_map"), values.get("--ckpt_path"), values.get("--data.root")
    if class_map is None:
        return args
    if not ckpt:
        raise UserInputError("--class_map needs --ckpt_path: the model whose classes the map targets")
    from bloodcls.checkpoints import summarize_checkpoint

    classes = summarize_checkpoint(ckpt).class_names
    if not classes:
        raise UserInputError(f"--ckpt_path: {ckpt} records no class names; --class_map cannot map to it")
    rest += ["--data.init_args.class_map", class_map, "--data.init_args.model_classes", json.dumps(classes)]
    if not any(a.startswith("--report.output_dir") for a in args) and Path(ckpt).parent.name == "checkpoints":
        name = Path(root).name if root else "external"
        rest += ["--report.output_dir", str(Path(ckpt).parent.parent / f"test_{name}")]
    return rest


def main(argv: list[str] | None = None) -> None:
    """The trainer commands (the console script is ``bloodcls.entry.main``, which hands them here); returns None
    so the process exit status is 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in TRAINER_COMMANDS:
        entry_main(args)  # overview, --version, tools, unknown commands: bloodcls.entry, which imports no torch
        return
    command, rest = args[0], args[1:]
    if command in ("validate", "test", "predict"):
        rest = _config_from_checkpoint(rest)
    quiet_third_party_noise()
    quiet_console()
    ignore_sigusr1_outside_slurm()
    # LightningCLI reads sys.argv (passing args as well makes it warn), so hand it the rewritten command line --
    # and put the caller's back afterwards: main([...]) is also called in-process (tests, Ray Tune trials).
    saved_argv = sys.argv
    sys.argv = [sys.argv[0] if sys.argv else "bloodcls", command, *rest]
    try:
        with user_errors(f"bloodcls {command}"):
            if command in ("validate", "test"):
                sys.argv = [*sys.argv[:2], *_class_map_args(sys.argv[2:])]
            BloodCLI()
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
