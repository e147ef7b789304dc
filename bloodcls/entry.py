"""The ``bloodcls`` console script: overview, ``--version`` and dispatch, without importing torch or Lightning
(``bloodcls --help`` and a tool's ``--help`` answer at once; the trainer commands import them when they run)."""

from __future__ import annotations

import importlib
import sys

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
    "explain": "class activation maps (Grad-CAM, Grad-CAM++, EigenCAM, Score-CAM) of a checkpoint's predictions",
    "calibrate": "fit a checkpoint's temperature and referral threshold on its validation split (stored in it)",
    "summarize": "mean +- std of test metrics over runs (k-fold folds, seeds)",
    "embed": "embed a dataset's splits with a frozen backbone (cached; for light heads: configs/strategies/knn.yaml)",
}


def run_tool(command: str, argv: list[str]) -> None:
    """Run the tool command ``command`` (a key of ``TOOL_COMMANDS``) on ``argv``."""
    from bloodcls.commands.common import one_line_argparse_errors

    with one_line_argparse_errors():
        importlib.import_module(f"bloodcls.commands.{command}").main(argv)


def print_overview() -> None:
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; returns None so the process exit status is 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print_overview()
        return
    if args[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"bloodcls {version('bloodcls')}")
        return
    command, rest = args[0], args[1:]
    if command in TOOL_COMMANDS:
        from bloodcls.console import quiet_console

        quiet_console()
        run_tool(command, rest)
        return
    if command not in TRAINER_COMMANDS:
        known = ", ".join([*TRAINER_COMMANDS, *TOOL_COMMANDS])
        print(f"bloodcls: error: unknown command '{command}' (expected one of: {known})", file=sys.stderr)
        raise SystemExit(2)
    from bloodcls.cli import main as trainer_main  # torch and Lightning from here on

    trainer_main(args)


if __name__ == "__main__":
    main()
