"""No code runs from a checkpoint: a pickle payload through every reader (test, validate, predict, export, fit
--ckpt_path, backbone_checkpoint, pretrained_weights) is refused in one line; checkpoint mistakes are one line too;
best.ckpt is weights-only (smaller than last.ckpt) and still evaluates on the run's split."""

from __future__ import annotations

import csv
import json
import os
import pathlib
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run_cli

from bloodcls.checkpoints import load_checkpoint
from bloodcls.cli import BloodCLI, main
from bloodcls.errors import UserInputError

QUICKSTART = str(REPO / "configs/quickstart.yaml")
# The quickstart config, shrunk: parsing and building it must stay cheap (no reader gets far enough to train).
SMALL = ["--config", QUICKSTART, "--data.source.per_class", "12", "--data.init_args.num_workers", "0"]


class Payload:
    """Unpickled, this creates ``marker``: what a hostile checkpoint would do instead (run any callable)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def write_payload(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped dict (so only the payload makes it unsafe) with the payload inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = {
        "state_dict": {"net.fc.weight": torch.zeros(5, 4)},
        "hyper_parameters": {"num_classes": 5},
        "optimizer_states": [],
        "epoch": 0,
        "extra": Payload(marker),
    }
    torch.save(contents, path)
    return path


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    return write_payload(tmp_path / "evil.ckpt", marker), marker


def test_the_payload_is_live(evil: tuple[Path, Path]) -> None:
    """The test's premise: an unsafe load of this file does run code (so 'no marker' below means 'refused')."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def _readers(tmp_path: Path, evil: Path) -> dict[str, list[str]]:
    config_naming_it = tmp_path / "resume.yaml"
    config_naming_it.write_text(f"ckpt_path: {evil}\n")
    runs = tmp_path / "runs"
    write_payload(runs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", evil.parent / "pwned")
    return {
        "test": ["test", *SMALL, "--ckpt_path", str(evil)],
        "test-without-config": ["test", "--ckpt_path", str(evil)],
        "validate": ["validate", *SMALL, "--ckpt_path", str(evil)],
        "predict": ["predict", *SMALL, "--ckpt_path", str(evil), "--data.init_args.predict_root", str(tmp_path)],
        "export": ["export", "--ckpt_path", str(evil)],
        "fit-ckpt_path": ["fit", *SMALL, "--ckpt_path", str(evil)],
        "fit-ckpt_path-in-config": ["fit", *SMALL, "--config", str(config_naming_it)],
        "fit-ckpt_path-last": [
            "fit",
            *SMALL,
            "--ckpt_path",
            "last",
            "--trainer.logger.init_args.save_dir",
            str(runs),
            "--trainer.logger.init_args.version",
            "0",
        ],
        "backbone_checkpoint": ["fit", *SMALL, "--model.init_args.backbone_checkpoint", str(evil)],
        "pretrained_weights": ["fit", *SMALL, "--model.init_args.pretrained_weights", str(evil)],
    }


READERS = [
    "test",
    "test-without-config",
    "validate",
    "predict",
    "export",
    "fit-ckpt_path",
    "fit-ckpt_path-in-config",
    "fit-ckpt_path-last",
    "backbone_checkpoint",
    "pretrained_weights",
]


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_the_payload_in_one_line(
    reader: str,
    evil: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOODCLS_DEBUG", raising=False)
    readers = _readers(tmp_path, path)
    assert sorted(readers) == sorted(READERS)
    args = readers[reader]
    with pytest.raises(SystemExit) as exc:  # any other exception (a traceback) fails the test
        main(args)
    err = capsys.readouterr().err
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert exc.value.code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(f"bloodcls {args[0]}: error: ")
    assert "refusing to unpickle arbitrary objects from" in errors[0] and "pathlib.Path" in errors[0]


@pytest.mark.slow  # starts the console script (a torch + Lightning import: seconds)
def test_console_script_refuses_even_when_torch_is_told_to_unpickle(evil: tuple[Path, Path], tmp_path: Path) -> None:
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` flips torch.load's *default* to unsafe; bloodcls never relies on it."""
    path, marker = evil
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        result = run_cli("test", "--ckpt_path", str(path), cwd=tmp_path, timeout=120)
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    assert not marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "refusing to unpickle arbitrary objects" in result.stderr


def test_python_loaders_refuse_the_payload(evil: tuple[Path, Path]) -> None:
    from bloodcls.models import create_backbone
    from bloodcls.strategies.backbones import load_backbone_checkpoint

    path, marker = evil
    with pytest.raises(UserInputError, match=r"^--ckpt_path: refusing to unpickle arbitrary objects from"):
        load_checkpoint(path)
    with pytest.raises(UserInputError, match=r"^model.backbone_checkpoint: refusing to unpickle"):
        load_backbone_checkpoint(create_backbone("bloodcls_cnn_tiny", 5), str(path))
    with pytest.raises(UserInputError, match=r"^model.pretrained_weights: refusing to unpickle"):
        create_backbone("bloodcls_cnn_tiny", 5, pretrained_weights=str(path))
    assert not marker.exists()


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"^--ckpt_path: checkpoint .*nope.ckpt does not exist$"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserInputError, match=r"truncated.ckpt is not a readable checkpoint \(truncated or corrupt"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(UserInputError, match=r"notes.ckpt is not a readable checkpoint"):
        load_checkpoint(text, key="model.backbone_checkpoint")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(UserInputError, match=r"holds a list, not a dict"):
        load_checkpoint(tmp_path / "list.ckpt")
    assert torch.equal(load_checkpoint(good)["state_dict"]["w"], torch.zeros(1000))


# --- a real tiny run: checkpoint mistakes, weights-only best.ckpt ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch synthetic run (bloodcls_cnn_tiny, 32 px, 12 images per class, AdamW); returns its directory."""
    root = tmp_path_factory.mktemp("ckpt_run")
    BloodCLI(
        args=[
            "fit",
            *SMALL,
            "--model.init_args.backbone",
            "bloodcls_cnn_tiny",
            "--data.init_args.image_size",
            "32",
            "--data.init_args.batch_size",
            "16",
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(root / "runs"),
        ]
    )
    run = root / "runs" / "quickstart" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


def _one_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_best_is_weights_only_and_smaller_than_last(tiny_run: Path) -> None:
    best, last = tiny_run / "checkpoints" / "best.ckpt", tiny_run / "checkpoints" / "last.ckpt"
    best_contents, last_contents = load_checkpoint(best), load_checkpoint(last)
    assert "optimizer_states" not in best_contents and last_contents["optimizer_states"]  # Adam's moments
    assert best.stat().st_size < 0.6 * last.stat().st_size
    # What evaluating needs stayed: the split and the class names.
    assert best_contents["BloodCellDataModule"]["split"] and best_contents["hyper_parameters"]["class_names"]


def test_test_on_best_restores_the_runs_split_and_class_names(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tiny_run.parent)
    # Another split_seed on the command line: the split restored from best.ckpt must win over a re-split.
    main(["test", "--ckpt_path", str(tiny_run / "checkpoints" / "best.ckpt"), "--data.init_args.split_seed", "7"])
    with (tiny_run / "split.csv").open() as fh:
        test_paths = {row["path"] for row in csv.DictReader(fh) if row["subset"] == "test"}
    with (tiny_run / "test" / "test_predictions.csv").open() as fh:
        evaluated = list(csv.DictReader(fh))
    assert {row["path"] for row in evaluated} == test_paths
    metrics = json.loads((tiny_run / "test" / "metrics.json").read_text())
    assert metrics["n"] == len(test_paths)
    assert "monocyte" in (tiny_run / "test" / "per_class.csv").read_text()


def test_checkpoint_mistakes_are_one_line(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOODCLS_DEBUG", raising=False)
    best, last = tiny_run / "checkpoints" / "best.ckpt", tiny_run / "checkpoints" / "last.ckpt"

    line = _one_error(["test", "--ckpt_path", "nope.ckpt"], capsys)
    assert line == "bloodcls test: error: --ckpt_path: checkpoint nope.ckpt does not exist"

    line = _one_error(["test", *SMALL], capsys)  # today: metrics of an untrained network, exit 0
    assert line.startswith("bloodcls test: error: bloodcls test needs --ckpt_path")

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:5000])
    line = _one_error(["validate", *SMALL, "--ckpt_path", str(truncated)], capsys)
    assert "truncated.ckpt is not a readable checkpoint (truncated or corrupt" in line

    contents = load_checkpoint(best)
    contents["hyper_parameters"].update(num_classes=3, class_names=["a", "b", "c"])
    three = tmp_path / "three.ckpt"
    torch.save(contents, three)
    line = _one_error(["test", *SMALL, "--ckpt_path", str(three)], capsys)
    assert f"--ckpt_path: {three} was trained for 3 classes, but the data has 5 (basophil," in line

    line = _one_error(["fit", *SMALL, "--ckpt_path", str(best)], capsys)
    assert "holds weights only (no optimizer state), so a fit cannot resume from it" in line

    # `last` with no last checkpoint: Lightning would warn and silently train from scratch.
    line = _one_error(
        ["fit", *SMALL, "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", "last"], capsys
    )
    assert "--ckpt_path last: no last checkpoint in " in line and "version_0/checkpoints" in line
    assert not list(tmp_path.rglob("version_*"))  # and it left no empty run folder

    line = _one_error(["test", *SMALL, "--ckpt_path", "best"], capsys)
    assert "--ckpt_path best: means a checkpoint of a fit in the same process" in line
