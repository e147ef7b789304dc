"""Weights & Biases: offline mode without credentials, names from the config, and an offline fit + test through
the CLI whose run directories hold the metrics, the resolved config, the test report table and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from jsonargparse import Namespace
from scale_helpers import run_bloodcls, tiny_fit_args
from wandb_records import OfflineRun

from bloodcls.callbacks.wandb import (
    WandbLogger,
    default_run_name,
    fill_wandb_defaults,
    has_wandb_credentials,
    resolve_offline,
)
from bloodcls.errors import UserInputError
from bloodcls.evaluation.report import PER_CLASS_FIELDS


def test_credentials_from_env_or_netrc(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    assert not has_wandb_credentials({}, netrc)  # no file
    assert has_wandb_credentials({"WANDB_API_KEY": "x" * 40}, netrc)
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert has_wandb_credentials({}, netrc)
    assert not has_wandb_credentials({"WANDB_BASE_URL": "https://wandb.example.org"}, netrc)  # other host


def test_offline_unless_told_or_logged_in(tmp_path: Path) -> None:
    none = tmp_path / "missing-netrc"
    assert resolve_offline(None, {}, none)  # no API key: never block on a login prompt or the network
    assert not resolve_offline(None, {"WANDB_API_KEY": "k"}, none)
    assert resolve_offline(None, {"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}, none)
    assert not resolve_offline(None, {"WANDB_MODE": "online"}, none)  # the user's explicit choice wins
    assert resolve_offline(True, {"WANDB_API_KEY": "k"}, none) and not resolve_offline(False, {}, none)


def test_logger_goes_offline_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    logger = WandbLogger(save_dir=str(tmp_path / "runs"))  # creates no run: wandb.init is lazy
    assert logger._offline and logger.save_dir == str(tmp_path / "runs")
    with pytest.raises(UserInputError, match="log_model=True needs an online run"):
        WandbLogger(save_dir=str(tmp_path / "runs"), log_model=True)


def _config(**data: object) -> Namespace:
    wandb = Namespace(
        class_path="bloodcls.callbacks.wandb.WandbLogger",
        init_args=Namespace(name=None, group=None, job_type=None, tags=["mine"]),
    )
    csv = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(name="quickstart"))
    return Namespace(
        seed_everything=3,
        trainer=Namespace(logger=[csv, wandb]),
        model=Namespace(class_path="bloodcls.strategies.FixMatch", init_args=Namespace(backbone="resnet18")),
        data=Namespace(init_args=Namespace(**{"labels_per_class": None, "labeled_fraction": None, **data})),
    )


def test_run_names_groups_and_tags_from_the_config() -> None:
    assert default_run_name(_config(labels_per_class=10)) == "FixMatch-10lpc"
    assert default_run_name(_config(labeled_fraction=0.05)) == "FixMatch-5pct"
    assert default_run_name(_config()) == "FixMatch-all"
    config = _config(labels_per_class=10)
    fill_wandb_defaults(config, "fit")
    args = config.trainer.logger[1].init_args
    assert (args.name, args.group, args.job_type) == ("FixMatch-10lpc", "FixMatch-10lpc", "fit")
    assert args.tags == ["mine", "FixMatch", "10lpc", "seed3", "resnet18"]
    assert config.trainer.logger[0].init_args.name == "quickstart"  # other loggers untouched
    fill_wandb_defaults(config, "test")  # `bloodcls test` re-reads the fit run's saved config
    assert (args.name, args.group, args.job_type) == ("FixMatch-10lpc-test", "FixMatch-10lpc", "test")


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OfflineRun, OfflineRun]:
    """``bloodcls fit`` then ``bloodcls test`` with the W&B fragment, offline, in a temporary directory."""
    root = tmp_path_factory.mktemp("wandb_offline")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_API_KEY": "",
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # a dead port: any attempt to reach a server fails at once
        "WANDB_DIR": str(root / "wandb-dir"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "WANDB_DATA_DIR": str(root / "wandb-data"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_X_DISABLE_STATS": "true",
    }
    fit = tiny_fit_args(REPO / "configs" / "quickstart.yaml", "configs/loggers/wandb.yaml") + [
        "--data.source.per_class",
        "12",
        "--data.init_args.labels_per_class",
        "4",
        "--data.init_args.batch_size",
        "10",
        "--trainer.max_epochs",
        "2",
        "--trainer.log_every_n_steps",
        "1",
    ]
    result = run_bloodcls(*fit, cwd=root, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    ckpt = root / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt"
    result = run_bloodcls("test", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false", cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dirs = sorted((root / "runs" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2, run_dirs  # one W&B run for fit, one for test
    runs = [OfflineRun.load(d) for d in run_dirs]
    fit_run, test_run = sorted(runs, key=lambda r: r.run.job_type)  # "fit" < "test"
    return root, fit_run, test_run


@pytest.mark.slow  # fit + test subprocesses with the W&B logger
def test_offline_fit_run_holds_metrics_and_config(offline_runs: tuple[Path, OfflineRun, OfflineRun]) -> None:
    _, run, _ = offline_runs
    assert (run.run.display_name, run.run.run_group, run.run.job_type) == ("Supervised-4lpc", "Supervised-4lpc", "fit")
    assert run.run.project == "bloodcls" and {"bloodcls", "Supervised", "4lpc", "seed0"} <= set(run.run.tags)
    balanced = run.values("val/balanced_acc")
    assert len(balanced) == 2 and all(0.0 <= v <= 1.0 for v in balanced)  # one value per epoch
    assert run.values("train/loss") and all(v > 0 for v in run.values("train/loss"))
    resolved = run.config["config"]  # the whole resolved CLI config
    assert resolved["model"]["init_args"]["backbone"] == "bloodcls_cnn_tiny"
    assert resolved["data"]["init_args"]["labels_per_class"] == 4
    assert {"config.yaml", "split.csv", "data_report.json", "metrics.csv"} <= set(run.files)


@pytest.mark.slow
def test_offline_test_run_holds_the_report(offline_runs: tuple[Path, OfflineRun, OfflineRun]) -> None:
    root, fit_run, run = offline_runs
    assert (run.run.display_name, run.run.job_type) == ("Supervised-4lpc-test", "test")
    assert run.run.run_group == fit_run.run.run_group
    report = json.loads((root / "runs" / "quickstart" / "version_0" / "test" / "metrics.json").read_text())
    assert run.values("test/acc")[-1] == pytest.approx(report["acc"], abs=1e-6)
    assert run.values("test/balanced_acc")[-1] == pytest.approx(report["balanced_acc"], abs=1e-6)
    assert run.summary["test/ece"] == pytest.approx(report["ece"])
    # The per-class table: a table file in the run directory with one row per class.
    [table_path] = run.values("test/per_class/path")
    [run_dir] = [d for d in (root / "runs" / "wandb").glob("offline-run-*") if d.name.endswith(run.run.run_id)]
    table = json.loads((run_dir / "files" / table_path).read_text())
    assert table["columns"] == list(PER_CLASS_FIELDS)
    assert [row[0] for row in table["data"]] == [row["class"] for row in report["per_class"]]
    assert run.values("test/plots/confusion_matrix/_type") == ["image-file"]
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "test_predictions.csv"):
        assert f"test/{name}" in run.files
        assert (run_dir / "files" / "test" / name).resolve().is_file()  # what `wandb sync` will upload
