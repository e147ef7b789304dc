"""The bloodcls command: help, config parsing, one-line errors, and quickstart fit -> test -> predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

from bloodcls.cli import BloodCLI, main

# configs/sweeps/ holds `bloodcls tune` sweep files, not fit configs: tests/tune/test_sweep_file.py validates them.
CONFIGS = sorted(c for c in (REPO / "configs").rglob("*.yaml") if c.parent.name != "sweeps")
# Full configs name a strategy and a datamodule; the others are fragments composed after a full one.
FULL = [c for c in CONFIGS if "class_path: bloodcls.strategies" in c.read_text()]
BASE = REPO / "configs" / "quickstart.yaml"


def test_help_lists_all_commands(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "download"):
        assert f"  {command}" in out


def test_version_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    main(["--version"])
    assert capsys.readouterr().out.strip() == f"bloodcls {version('bloodcls')}"
    with pytest.raises(SystemExit) as exc:
        main(["train"])
    assert exc.value.code == 2 and "unknown command 'train'" in capsys.readouterr().err


def _class_paths(text: str) -> dict[str, str]:
    """Top-level ``model`` / ``data`` class paths of a config (None where it names none)."""
    loaded = yaml.safe_load(text) or {}
    return {
        k: loaded[k]["class_path"]
        for k in ("model", "data")
        if isinstance(loaded.get(k), dict) and "class_path" in loaded[k]
    }


def test_every_config_parses_and_composes(capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN habit 4, in one process: every YAML under configs/ goes through fit's parser (``--print_config``),
    alone when it is a full config, after quickstart.yaml when it is a fragment, and the class it names wins."""
    assert len(CONFIGS) > 20  # the glob found the configs
    for config in CONFIGS:
        configs = ["--config", str(config)] if config in FULL else ["--config", str(BASE), "--config", str(config)]
        with pytest.raises(SystemExit) as exc:
            main(["fit", *configs, "--print_config"])
        assert exc.value.code == 0, config
        printed = _class_paths(capsys.readouterr().out)
        assert printed["model"].startswith("bloodcls.strategies.") and printed["data"].startswith("bloodcls.data."), (
            config
        )
        for key, class_path in _class_paths(config.read_text()).items():
            assert printed[key] == class_path, f"{config}: {key}"


def test_data_num_classes_is_linked_to_the_model() -> None:
    cli = BloodCLI(args=["--config", str(REPO / "configs/quickstart.yaml"), "--data.source.per_class", "4"], run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes == 5
    assert cli.model.class_names == cli.datamodule.class_names


@pytest.mark.slow  # starts the console script (a torch + Lightning import: seconds)
def test_unknown_config_key_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli(
        "fit", "--config", str(REPO / "configs/quickstart.yaml"), "--data.init_args.no_such_key", "1", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "no_such_key" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["--data.init_args.root", "/does/not/exist", "--data.init_args.source", "bloodcls.data.FolderSource"],
            "data.root: /does/not/exist does not exist",
        ),
        (["--model.init_args.backbone", "resnet181"], "unknown backbone 'resnet181'"),
        (["--checkpoint.monitor", "test/acc"], "never on test metrics"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    override: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOODCLS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:  # any other exception (a traceback) fails the test
        main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *override])
    assert exc.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and error_lines[0].startswith("bloodcls fit: error: ") and message in error_lines[0]


@pytest.mark.slow  # a 4-epoch fit, then test and predict, as three processes
def test_quickstart_fit_test_predict(tmp_path: Path) -> None:
    config = str(REPO / "configs/quickstart.yaml")
    fast = [
        "--trainer.max_epochs",
        "4",
        "--data.source.per_class",
        "120",
        "--data.init_args.num_workers",
        "0",
    ]
    fit = run_cli("fit", "--config", config, *fast, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.exists() and (run_dir / "config.yaml").exists()
    split = list(csv.DictReader((run_dir / "split.csv").open()))
    test_paths = {row["path"] for row in split if row["subset"] == "test"}
    assert len(test_paths) == 5 * 18

    test = run_cli("test", "--ckpt_path", str(best), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    report_dir = run_dir / "test"
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "roc.png", "test_predictions.csv"):
        assert (report_dir / name).exists(), name
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["n"] == len(test_paths) and metrics["acc"] > 0.5
    evaluated = {row["path"] for row in csv.DictReader((report_dir / "test_predictions.csv").open())}
    assert evaluated == test_paths  # exactly the split's test subset
    assert "Balanced accuracy" in test.stdout and "monocyte" in test.stdout

    from bloodcls.data.synthetic import write_image_folder

    images = tmp_path / "to_classify"
    write_image_folder(images, n_per_class=2, size=80, seed=7)
    (images / "notes.jpg").write_text("not an image")
    pred = run_cli("predict", "--ckpt_path", str(best), "--data.init_args.predict_root", str(images), cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "predict" / "predictions.csv").open()))
    assert len(rows) == 10
    assert set(rows[0]) == {
        "path",
        "pred",
        "confidence",
        "prob_basophil",
        "prob_eosinophil",
        "prob_lymphocyte",
        "prob_monocyte",
        "prob_neutrophil",
    }
    assert abs(sum(float(rows[0][k]) for k in rows[0] if k.startswith("prob_")) - 1.0) < 1e-4
    skipped = list(csv.DictReader((run_dir / "predict" / "predictions_skipped.csv").open()))
    assert [Path(r["path"]).name for r in skipped] == ["notes.jpg"]


def test_download_is_dispatched_from_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["download", "no-such-dataset", "--dest", str(tmp_path)])
    assert exc.value.code == 2
    assert "bloodcls download: error: unknown dataset 'no-such-dataset'" in capsys.readouterr().err
