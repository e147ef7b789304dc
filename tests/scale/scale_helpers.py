"""Helpers for tests that run the ``bloodcls`` console script in subprocesses (DDP, W&B offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import REPO, bloodcls_exe

SCALE_DIR = Path(__file__).resolve().parent


def run_bloodcls(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``bloodcls`` in its own process group, so a hung DDP job (rank 0 and the rank-1 process Lightning
    launches) is killed as a whole on timeout, never left behind."""
    full_env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "COLUMNS": "120",
        "PYTHONPATH": os.pathsep.join([str(SCALE_DIR), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [bloodcls_exe(), *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"bloodcls {' '.join(args[:2])} timed out after {timeout}s:\n{err[-3000:]}") from None
    finally:
        _kill_group(proc.pid)  # leftovers of our own group only: a DDP rank, a wandb-core service
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tiny_fit_args(config: Path, *fragments: str) -> list[str]:
    """``fit`` on the quickstart config shrunk to seconds: tiny CNN, 32 px synthetic images, no workers."""
    args = ["fit", "--config", str(config)]
    for fragment in fragments:
        args += ["--config", str(REPO / fragment)]
    return args + [
        "--model.init_args.backbone",
        "bloodcls_cnn_tiny",
        "--data.init_args.image_size",
        "32",
        "--data.init_args.num_workers",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
