"""``bloodcls tune`` end to end: a real two-trial Ray sweep on CPU, and one-line errors before Ray starts."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

from bloodcls.cli import BloodCLI, main
from bloodcls.tuning.space import parse_distribution

pytest.importorskip("ray.tune", reason="ray[tune] is the 'tune' extra")
pytest.importorskip("optuna", reason="optuna is the 'tune' extra")

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
PSEUDO_LABEL = str(REPO / "configs" / "strategies" / "pseudo_label.yaml")
SPACE = {
    "model.init_args.confidence_threshold": "uniform(0.7, 0.99)",
    "data.init_args.labels_per_class": "choice([5, 10])",
    "model.init_args.lambda_u": 0.5,  # a plain value: the same in every trial
}
# Tiny and fast: the shared 48 px synthetic folder read at 32 px, the tiny CNN, 2 epochs of 3 steps.
FAST = [
    "--model.init_args.backbone",
    "bloodcls_cnn_tiny",
    "--data.init_args.image_size",
    "32",
    "--data.init_args.num_workers",
    "0",
    "--data.init_args.steps_per_epoch",
    "3",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_epochs",
    "2",
]


def _sweep(path: Path, **entries: object) -> Path:
    path.write_text(yaml.safe_dump({"num_samples": 2, "space": SPACE, **entries}, sort_keys=False))
    return path


@pytest.mark.slow  # starts Ray and trains two trials
def test_two_trial_sweep_on_cpu(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = _sweep(
        tmp_path / "thresholds.yaml",
        seed=0,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        resources={"cpu": 1},
    )
    # Relative paths on purpose: trials run in Ray's own working directories, so they must be made absolute.
    root = Path("..") / image_folder.name
    workdir = image_folder.parent / f"work_{tmp_path.name}"
    workdir.mkdir()
    result = run_cli(
        "tune",
        *("--config", QUICKSTART, "--config", PSEUDO_LABEL, "--sweep", str(sweep), "--search", "optuna"),
        *(
            "--output",
            "sweep_out",
            "--data.init_args.root",
            str(root),
            "--data.init_args.source",
            "bloodcls.data.FolderSource",
            *FAST,
        ),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    out = workdir / "sweep_out"
    base = yaml.safe_load((out / "base_config.yaml").read_text())
    assert base["data"]["init_args"]["root"] == str(image_folder)

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2
    confidence = parse_distribution(SPACE["model.init_args.confidence_threshold"])
    for row in rows:
        assert confidence.contains(float(row["model.init_args.confidence_threshold"]))
        assert row["data.init_args.labels_per_class"] in ("5", "10")
        assert row["status"] in ("completed", "stopped_early") and row["error"] == ""
        assert 1 <= int(row["epochs"]) <= 2 and 0.0 <= float(row["val/balanced_acc_best"]) <= 1.0
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out / "trials" and (run_dir / "checkpoints" / "best.ckpt").exists()
        trial_config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert trial_config["model"]["init_args"]["lambda_u"] == 0.5  # the fixed value reached every trial
        assert trial_config["data"]["init_args"]["labels_per_class"] == int(row["data.init_args.labels_per_class"])
    best_row = max(rows, key=lambda r: float(r["val/balanced_acc_best"]))
    assert float(rows[0]["val/balanced_acc_best"]) == float(best_row["val/balanced_acc_best"])  # best first

    best = out / "best_config.yaml"
    best_config = yaml.safe_load(best.read_text())
    best_args = best_config["model"]["init_args"]
    assert best_args["confidence_threshold"] == pytest.approx(float(best_row["model.init_args.confidence_threshold"]))
    assert best_config["data"]["init_args"]["labels_per_class"] == int(best_row["data.init_args.labels_per_class"])
    assert best_config["trainer"]["max_epochs"] == 2 and best_args["lambda_u"] == 0.5
    monkeypatch.setattr(sys, "argv", ["bloodcls"])  # LightningCLI warns when given args besides pytest's argv
    with pytest.raises(SystemExit) as exc:
        BloodCLI(args=["fit", "--config", str(best), "--print_config"])  # what `bloodcls fit --config` accepts
    assert exc.value.code == 0

    for param in ("confidence_threshold", "labels_per_class"):
        plot = out / "plots" / f"val_balanced_acc_vs_{param}.png"
        assert plot.read_bytes()[:4] == b"\x89PNG", plot
    assert "best: trial" in result.stdout and str(best) in result.stdout


@pytest.mark.parametrize(
    ("sweep_entries", "extra", "message"),
    [
        ({"metric": "test/acc"}, [], "metric='test/acc' must be a validation metric"),
        ({"space": {"model.init_args.confidence_threshold": "gauss(0, 1)"}}, [], "unknown distribution 'gauss'"),
        (
            {"space": {"model.init_args.confidence_treshold": "uniform(0.7, 0.99)"}},
            [],
            "space.model.init_args.confidence_treshold=0.7: ",
        ),
        ({}, ["--data.init_args.no_such_key", "1"], "no_such_key"),
        ({}, ["--num_samples", "0"], "--num_samples=0 must be a positive integer"),
        ({}, ["--search", "bayes"], "argument --search: invalid choice: 'bayes'"),
        ({}, ["--search", "grid"], "search=grid needs choice([...]) for every searched key"),
        ({}, ["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers there"),
    ],
)
def test_bad_sweeps_are_one_line_errors_before_ray_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    sweep_entries: dict[str, object],
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = _sweep(tmp_path / "s.yaml", **sweep_entries)
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--config", QUICKSTART, "--config", PSEUDO_LABEL, "--sweep", str(sweep), *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = [line for line in err.splitlines() if "error:" in line]  # notes (e.g. CPU oversubscription) may precede
    assert len(lines) == 1 and lines[0].startswith("bloodcls tune: error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "tune" / "s" / "trials.csv").exists()


def test_missing_sweep_and_config_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv, message in (
        (["--config", QUICKSTART, "--sweep", str(tmp_path / "nope.yaml")], "does not exist"),
        (["--sweep", str(_sweep(tmp_path / "s.yaml"))], "--config: give at least one fit config"),
        (["--config", QUICKSTART], "the following arguments are required: --sweep"),
        (["--config", str(tmp_path / "no.yaml"), "--sweep", str(tmp_path / "s.yaml")], "File does not exist"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["tune", *argv])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "\n" not in err and message in err, err


def test_an_existing_sweep_output_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "trials.csv").write_text("trial_id\n")
    with pytest.raises(SystemExit):
        main(["tune", "--config", QUICKSTART, "--sweep", str(_sweep(tmp_path / "s.yaml")), "--output", str(tmp_path)])
    assert "already holds a sweep" in capsys.readouterr().err


@pytest.mark.slow  # starts Ray; two linear-probe trials over one embedding cache
def test_linear_probe_grid_sweep_reuses_the_embedding_cache(image_folder: Path, tmp_path: Path) -> None:
    """A real Ray grid (search: grid runs each option once) over the cheapest strategy, the linear probe."""
    workdir = image_folder.parent / f"work_{tmp_path.name}"
    workdir.mkdir()
    grid = dict(yaml.safe_load((REPO / "configs" / "sweeps" / "linear_probe.yaml").read_text()))
    grid |= {"search": "grid", "num_samples": 1, "space": {"model.init_args.C": "choice([0.01, 10.0])"}}
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(yaml.safe_dump(grid))
    result = run_cli(
        "tune",
        *("--config", QUICKSTART, "--config", str(REPO / "configs" / "strategies" / "linear_probe.yaml")),
        *("--sweep", str(sweep)),
        *("--output", "sweep_out", "--data.init_args.root", str(image_folder)),
        *("--data.init_args.source", "bloodcls.data.FolderSource", "--data.init_args.labels_per_class", "5"),
        *FAST[:6],  # tiny backbone, 32 px, no workers; the head's config keeps one epoch
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = list(csv.DictReader((workdir / "sweep_out" / "trials.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "completed" and row["error"] == "", row["error"]
        assert 0.0 <= float(row["val/balanced_acc_best"]) <= 1.0
    assert sorted(float(row["model.init_args.C"]) for row in rows) == [0.01, 10.0]  # each grid value once
    assert "grid of 2 cells x 1 pass(es) = 2 trials" in result.stderr
