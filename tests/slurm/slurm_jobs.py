"""Submitting the repository's slurm/ scripts to the test cluster and waiting on them."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .slurm_cluster import SlurmCluster

REPO = Path(__file__).resolve().parents[2]
# The tiny run every job trains: synthetic cells at 32 px, the tiny CNN, no loader workers, no progress bar.
TINY_FIT = [
    *("--data.init_args.source", "bloodcls.data.SyntheticSource"),
    *("--data.init_args.source.per_class", "20"),
    *("--data.init_args.image_size", "32"),
    *("--model.init_args.backbone", "bloodcls_cnn_tiny"),
    *("--data.init_args.num_workers", "0"),
    *("--trainer.enable_progress_bar", "false"),
]


@dataclass
class Submitted:
    """A finished ``sbatch`` call: its exit status (the job's with --wait), job id and output file."""

    returncode: int
    job_id: str
    stdout: str
    stderr: str
    output: Path

    def log(self) -> str:
        """The job's output file (what the script and bloodcls printed)."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def sbatch(
    cluster: SlurmCluster,
    script: str,
    *args: str,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    output: Path,
    timeout: float = 400,
) -> Submitted:
    """``sbatch [options] slurm/<script> [args]`` from the repository root, with this cluster's SLURM_CONF."""
    cmd = ["sbatch", f"--output={output}", *options, str(REPO / "slurm" / script), *args]
    result = subprocess.run(
        cmd, cwd=REPO, env={**cluster.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    match = re.search(r"Submitted batch job (\d+)|^(\d+)", result.stdout, re.MULTILINE)
    job_id = (match.group(1) or match.group(2)) if match else ""
    return Submitted(result.returncode, job_id, result.stdout, result.stderr, output)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
