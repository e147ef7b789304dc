"""The session's private single-node Slurm cluster (skipped without Slurm); job helpers are in slurm_jobs.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .slurm_cluster import SlurmCluster, missing_binaries, start_cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on this host (all CPUs, 2 fake GPUs), stopped with everything it ran."""
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} not found): "
            "apt-get install slurm-wlm munge (.ci/run does it)"
        )
    if os.geteuid() != 0:
        pytest.skip("the private Slurm cluster runs slurmd as root (it starts jobs); run the tests as root")
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
