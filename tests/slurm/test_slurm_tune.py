"""slurm/tune.sbatch: a Ray head on the allocation, a 2-trial `bloodcls tune --address` sweep, Ray stopped after."""

from __future__ import annotations

import csv
import re
import socket
from pathlib import Path

import pytest
import yaml

from .slurm_cluster import SlurmCluster
from .slurm_jobs import TINY_FIT, sbatch

pytest.importorskip("ray.tune", reason="ray[tune] is the 'tune' extra")
pytest.importorskip("bloodcls.commands.tune", reason="bloodcls tune is not available")

pytestmark = pytest.mark.slow  # starts a Slurm cluster and real jobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes naming the path ``text`` (read from /proc; nothing is signalled)."""
    pattern = re.compile(re.escape(text) + r"(/|\s|$)")  # /tmp/ray-1 must not match /tmp/ray-12
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern.search(args):
            found.append(args)
    return found


def test_tune_job_runs_a_sweep_on_its_own_ray_cluster(slurm: SlurmCluster, tmp_path: Path) -> None:
    sweep = tmp_path / "budget.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "metric": "val/balanced_acc",
                "mode": "max",
                "search": "random",
                "num_samples": 2,
                "seed": 0,
                "scheduler": "none",
                "resources": {"cpu": 1, "gpu": 0},
                "space": {"data.init_args.labels_per_class": "choice([5, 10])"},
            }
        )
    )
    out = tmp_path / "sweep"
    job = sbatch(
        slurm,
        "tune.sbatch",
        *TINY_FIT,
        *("--trainer.max_epochs", "1"),
        options=("--wait", "--cpus-per-task=2"),
        env={"SWEEP": str(sweep), "OUTPUT": str(out), "RAY_PORT": str(_free_port())},
        output=tmp_path / "tune.out",
    )
    log = job.log()
    assert job.returncode == 0, f"{job.stderr}\n{log[-6000:]}"
    assert "1 node(s) x 2 CPU(s), 0 GPU(s)" in log
    assert "tune.sbatch: Ray is up with 1 node(s)" in log

    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all(row["status"] == "completed" and row["error"] == "" for row in rows), rows
    assert {row["data.init_args.labels_per_class"] for row in rows} <= {"5", "10"}
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["data"]["init_args"]["labels_per_class"] in (5, 10)

    # Ray ran inside the job (its temp dir names the job) and nothing of it outlived the job.
    ray_dir = f"/tmp/ray-{job.job_id}"
    assert "stopping Ray" in log
    assert not _processes_mentioning(ray_dir)
    assert not Path(ray_dir).exists()  # removed after a successful sweep
