"""Relative input paths in a config file resolve against that file's folder; command-line ones against the cwd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bloodcls.commands.common import parse_fit_config
from bloodcls.config_paths import absolute, absolute_path_args, resolve_config_paths

CONFIG = """
model:
  class_path: bloodcls.strategies.Supervised
  init_args:
    backbone: bloodcls_cnn_small
    backbone_checkpoint: weights/backbone.ckpt
data:
  class_path: bloodcls.data.BloodCellDataModule
  init_args:
    source:
      class_path: bloodcls.data.FolderSource
      init_args:
        root: ../images
    split_file: split.csv
    predict_root: /abs/predict
trainer:
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: runs
"""


def test_absolute_keeps_urls_and_absolute_paths() -> None:
    assert absolute("a/../b", "/base") == "/base/b"
    assert absolute("/x/y", "/base") == "/x/y"
    assert absolute("s3://bucket/x", "/base") == "s3://bucket/x"
    assert absolute("~/x", "/base") == os.path.expanduser("~/x")


def test_resolve_only_path_keys_of_data_and_model() -> None:
    config = {"data": {"init_args": {"root": "r", "batch_size": 4}}, "trainer": {"logger": {"save_dir": "runs"}}}
    resolve_config_paths(config, "/cfg")
    assert config["data"] == {"init_args": {"root": "/cfg/r", "batch_size": 4}}
    assert config["trainer"] == {"logger": {"save_dir": "runs"}}


def test_config_paths_follow_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli = parse_fit_config(["--config", str(folder / "run.yaml"), "--data.init_args.cache_dir", "cache"])
    config = cli.config
    data = config.data.init_args
    assert data.source.init_args.root == str(tmp_path / "project" / "images")
    assert data.split_file == str(folder / "split.csv")
    assert data.predict_root == "/abs/predict"
    assert config.model.init_args.backbone_checkpoint == str(folder / "weights" / "backbone.ckpt")
    assert data.cache_dir == str(elsewhere / "cache")  # the command line: the cwd
    assert config.trainer.logger.init_args.save_dir == "runs"  # outputs stay where bloodcls runs


def test_a_relative_config_path_from_another_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    cli = parse_fit_config(["--config", "c/run.yaml"])
    assert cli.config.data.init_args.source.init_args.root == str(tmp_path / "images")


def test_a_command_line_path_before_another_config_stays_relative_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--data.root REL --config other/fragment.yaml``: the fragment must not re-resolve the inherited value
    against its own folder (it read ``other/REL``)."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.yaml").write_text(CONFIG)
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "more.yaml").write_text("data:\n  init_args:\n    batch_size: 8\n")
    monkeypatch.chdir(tmp_path / "c")
    cli = parse_fit_config(
        [
            "--config",
            "run.yaml",
            "--data.init_args.split_file",
            "mine.csv",
            "--model.backbone_checkpoint=w.ckpt",
            "--config",
            "../fragments/more.yaml",
        ]
    )
    assert cli.config.data.init_args.split_file == str(tmp_path / "c" / "mine.csv")
    assert cli.config.model.init_args.backbone_checkpoint == str(tmp_path / "c" / "w.ckpt")
    assert cli.config.data.init_args.batch_size == 8


def test_absolute_path_args_touches_path_flags_only() -> None:
    args = ["--data.root", "r", "--data.batch_size", "4", "--trainer.default_root_dir", "d", "--data.split_file=null"]
    assert absolute_path_args(args, "/cwd") == [
        "--data.root",
        "/cwd/r",
        "--data.batch_size",
        "4",
        "--trainer.default_root_dir",
        "d",
        "--data.split_file=null",
    ]


def test_pbc_configs_still_point_at_the_shared_dataset() -> None:
    expected = os.path.normpath(REPO.parent / "shared" / "datasets" / "pbc")
    for config in [*sorted((REPO / "configs" / "pbc").glob("*.yaml")), REPO / "configs" / "data" / "pbc_64px.yaml"]:
        raw = yaml.safe_load(config.read_text())["data"]["init_args"]
        root = raw.get("root") or raw["source"]["init_args"]["root"]
        assert absolute(root, str(config.parent)) == expected, config
