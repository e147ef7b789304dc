"""slurm/fit.sbatch on a real (private, single-node) Slurm: placement from the allocation, refusals, requeue."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from .slurm_cluster import SlurmCluster
from .slurm_jobs import TINY_FIT, sbatch, wait_until

pytestmark = pytest.mark.slow  # starts a Slurm cluster and real jobs


def _val_epochs(metrics_csv: Path) -> list[int]:
    """Epochs with a validation row in a CSVLogger metrics.csv, in file order."""
    with metrics_csv.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/balanced_acc")]


def test_fit_job_runs_one_process_per_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="wandb is the 'wandb' extra")
    # A second logger in a list (the configs/loggers/wandb.yaml pattern, offline, writing under tmp_path): the
    # script must still pin the CSV logger's run directory, and give W&B an id that survives a requeue.
    wandb_fragment = tmp_path / "wandb.yaml"
    wandb_fragment.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "logger+": [
                        {
                            "class_path": "bloodcls.callbacks.wandb.WandbLogger",
                            "init_args": {"save_dir": str(tmp_path / "wandb"), "offline": True},
                        }
                    ]
                }
            }
        )
    )
    # --ntasks=2 without --ntasks-per-node: the script derives devices=2 and exports the per-node count that
    # Lightning's SLURMEnvironment insists on; 2 CPU processes then train with DDP (gloo).
    job = sbatch(
        slurm,
        "fit.sbatch",
        *TINY_FIT,
        *("--trainer.max_epochs", "2", "--data.init_args.batch_size", "16"),
        options=("--wait", "--ntasks=2"),
        env={
            "RUNS_DIR": str(tmp_path / "runs"),
            "RUN_NAME": "tiny",
            "CONFIG": f"configs/quickstart.yaml {wandb_fragment}",
        },
        output=tmp_path / "fit.out",
    )
    log = job.log()
    assert job.returncode == 0, f"{job.stderr}\n{log}"
    assert f"fit.sbatch: job {job.job_id} attempt 1" in log
    assert "1 node(s) x 2 task(s), accelerator=cpu" in log
    assert "Starting with 2 processes" in log  # Lightning's DDP rendezvous saw both ranks
    assert "SLURM auto-requeueing enabled" in log  # Lightning detected Slurm: the USR1 handler is armed

    run = tmp_path / "runs" / "tiny" / f"job{job.job_id}"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (str(trainer["devices"]), trainer["num_nodes"], trainer["accelerator"]) == ("2", 1, "cpu")
    assert trainer["default_root_dir"] == str(run)  # where Lightning writes and looks for hpc_ckpt_N.ckpt
    csv_logger, wandb_logger = trainer["logger"]
    assert csv_logger["init_args"]["version"] == f"job{job.job_id}"
    assert wandb_logger["init_args"]["id"] == f"tiny-job{job.job_id}"
    assert list((tmp_path / "wandb" / "wandb").glob(f"offline-run-*-tiny-job{job.job_id}"))
    assert (tmp_path / "runs" / "tiny" / ".slurm" / f"job{job.job_id}.yaml").is_file()  # what the job ran
    assert _val_epochs(run / "metrics.csv") == [0, 1]


@pytest.mark.parametrize(
    ("options", "args", "message"),
    [
        (
            ("--ntasks-per-node=1", "--gpus-per-node=2"),
            (),
            "fit.sbatch: error: the job has 2 GPU(s) per node but 1 task(s) per node; "
            "Lightning runs one process per GPU, so submit with --ntasks-per-node=2 --gpus-per-node=2",
        ),
        ((), ("--trainer.devices", "4"), "fit.sbatch: error: --trainer.devices is set by this script"),
        (
            (),
            ("--trainer.default_root_dir=elsewhere",),
            "fit.sbatch: error: --trainer.default_root_dir is set by this script",
        ),
        # Found while resolving the config, before srun: the CLI's own error.
        ((), ("--trainer.no_such_key", "1"), "error: unrecognized arguments: --trainer.no_such_key 1"),
    ],
    ids=["gpus-differ-from-tasks", "devices-override", "root-dir-override", "unknown-key"],
)
def test_bad_placement_or_input_is_refused(
    slurm: SlurmCluster, tmp_path: Path, options: tuple[str, ...], args: tuple[str, ...], message: str
) -> None:
    # The test cluster's node has 2 gres GPUs backed by no device: enough for Slurm to allocate them.
    job = sbatch(
        slurm,
        "fit.sbatch",
        *args,
        options=("--wait", *options),
        env={"RUNS_DIR": str(tmp_path / "runs")},
        output=tmp_path / "refused.out",
    )
    assert job.returncode == 2
    log = job.log()
    assert message in log and "Traceback" not in log
    assert not (tmp_path / "runs").exists()  # refused before anything was started


def test_usr1_requeues_and_the_job_resumes_from_the_hpc_checkpoint(slurm: SlurmCluster, tmp_path: Path) -> None:
    max_epochs = 20  # one step per epoch: long enough to signal mid-training, short enough to finish
    job = sbatch(
        slurm,
        "fit.sbatch",
        *TINY_FIT,
        *("--trainer.max_epochs", str(max_epochs)),
        *("--trainer.logger.init_args.flush_logs_every_n_steps", "1"),  # progress visible in metrics.csv
        options=("--parsable",),
        env={"RUNS_DIR": str(tmp_path / "runs"), "RUN_NAME": "requeue"},
        output=tmp_path / "requeue.out",
    )
    assert job.returncode == 0 and job.job_id, job.stderr
    run = tmp_path / "runs" / "requeue" / f"job{job.job_id}"
    metrics = run / "metrics.csv"
    wait_until(lambda: metrics.is_file() and len(_val_epochs(metrics)) >= 3, 300, "3 validated epochs")

    slurm.run("scancel", "--signal=USR1", job.job_id)  # what --signal=SIGUSR1@90 does before the time limit
    seen: dict[str, str] = {}

    def finished() -> bool:
        info = slurm.job_info(job.job_id)
        seen.update(info)
        return not info or info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")

    wait_until(finished, 400, "the requeued job to finish")
    log = job.log()
    assert seen.get("Restarts") == "1", seen
    assert seen.get("JobState") == "COMPLETED" and seen.get("ExitCode") == "0:0", f"{seen}\n{log}"

    hpc = run / "hpc_ckpt_1.ckpt"
    assert "Handling auto-requeue signal" in log and f"Requeued SLURM job: {job.job_id}" in log
    assert f"fit.sbatch: job {job.job_id} attempt 2" in log and f"(resumes from {hpc})" in log
    assert f"Restored all states from the checkpoint at {hpc}" in log

    # The hpc checkpoint is mid-training; the second attempt continued from it instead of starting over, and the
    # two attempts together validated every epoch.
    hpc_epoch = torch.load(hpc, map_location="cpu", weights_only=False)["epoch"]
    assert 2 <= hpc_epoch < max_epochs - 1
    first, second = _val_epochs(run / "metrics.attempt1.csv"), _val_epochs(metrics)
    assert min(second) >= hpc_epoch > 0 and max(second) == max_epochs - 1
    assert set(first) | set(second) == set(range(max_epochs))
