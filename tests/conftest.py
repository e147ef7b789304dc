"""Shared fixtures: an isolated decode cache, generated image folders, the real PBC folder when present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PBC_ROOT = (REPO.parent / "shared" / "datasets" / "pbc").resolve()

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read or write the user's ~/.cache/bloodcls from tests.
    monkeypatch.setenv("BLOODCLS_CACHE", str(tmp_path_factory.getbasetemp() / "bloodcls-cache"))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ImageFolder tree of synthetic cells (5 classes x 24 PNGs, 48 px)."""
    from bloodcls.data.synthetic import write_image_folder

    root = tmp_path_factory.mktemp("cells")
    write_image_folder(root, n_per_class=24, size=48, seed=1)
    return root


@pytest.fixture
def pbc_root() -> Path:
    if not PBC_ROOT.is_dir():
        pytest.skip(f"PBC dataset not found at {PBC_ROOT} (tests on real data are skipped without it)")
    return PBC_ROOT


def bloodcls_exe() -> str:
    """The installed console script (what users run), next to the interpreter running the tests."""
    exe = Path(sys.executable).parent / "bloodcls"
    return str(exe) if exe.exists() else "bloodcls"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "120"}
    return subprocess.run(
        [bloodcls_exe(), *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def fit_tiny_run(root: Path, backbone: str = "bloodcls_cnn_tiny", per_class: int = 12) -> Path:
    """A 1-epoch synthetic run (quickstart config, 32 px, batch 16, no loader workers) under ``root/runs``, in
    process; returns its best checkpoint."""
    from bloodcls.cli import BloodCLI

    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--model.init_args.backbone", backbone]
    args += ["--data.init_args.image_size", "32", "--data.source.per_class", str(per_class)]
    args += ["--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    BloodCLI(args=[*args, "--trainer.logger.init_args.save_dir", str(root / "runs")])
    best = root / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    return best
