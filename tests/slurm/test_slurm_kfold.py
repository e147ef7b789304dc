"""slurm/submit_kfold.sh: a 2-fold job array (fit + test per fold) and the dependent `bloodcls summarize` job."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from .slurm_cluster import SlurmCluster
from .slurm_jobs import REPO, TINY_FIT, wait_until

pytestmark = pytest.mark.slow  # starts a Slurm cluster and real jobs


def _test_subset(split_csv: Path) -> set[str]:
    with split_csv.open() as f:
        return {row["hash"] for row in csv.DictReader(f) if row["subset"] == "test"}


def test_kfold_array_then_summary(slurm: SlurmCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**slurm.env, "N_FOLDS": "2", "RUNS_DIR": str(runs), "RUN_NAME": "cv"}
    submit = subprocess.run(
        [str(REPO / "slurm" / "submit_kfold.sh"), f"--output={tmp_path}/%x-%A_%a.out", "--", *TINY_FIT]
        + ["--trainer.max_epochs", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stderr
    array_id = re.search(r"array job: (\d+) \(2 folds\)", submit.stdout)
    summary_id = re.search(r"summary job: (\d+)", submit.stdout)
    assert array_id and summary_id, submit.stdout
    wait_until(lambda: not slurm.job_ids(), 400, "the folds and the summary job")

    kfold = runs / "cv" / f"kfold{array_id.group(1)}"
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.out")))
    if not (kfold / "summary.csv").is_file():
        pytest.fail(f"no summary.csv; job outputs:\n{logs[-6000:]}")
    folds = [kfold / "fold0", kfold / "fold1"]
    for k, fold in enumerate(folds):
        assert f"kfold.sbatch: fold {k} of 2" in logs
        assert (fold / "test" / "metrics.json").is_file()
    # Each fold really tested on its own fold: the two test subsets partition the (deduplicated) images.
    test0, test1 = _test_subset(folds[0] / "split.csv"), _test_subset(folds[1] / "split.csv")
    assert test0 and test1 and not test0 & test1

    accs = [json.loads((f / "test" / "metrics.json").read_text())["acc"] for f in folds]
    with (kfold / "summary.csv").open() as f:
        rows = {row["metric"]: row for row in csv.DictReader(f)}
    assert rows["acc"]["n"] == "2"
    assert float(rows["acc"]["mean"]) == pytest.approx(sum(accs) / 2)
    assert float(rows["acc"]["std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)  # sample std of two values
    summary = json.loads((kfold / "summary.json").read_text())
    assert summary["runs"] == [str(f) for f in folds]
    assert "Test metrics over 2 runs" in (kfold / "summary.out").read_text()
