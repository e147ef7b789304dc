"""A private single-node Slurm cluster (munged, slurmctld, slurmd) in a temporary directory, for tests.

Everything lives under one directory: munge key and socket, ``slurm.conf``, state, spool and logs; the daemons run
in the foreground as children of the test process and are stopped by pid. Client commands (sbatch, squeue, ...)
find the cluster through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
FAKE_GPUS = 2  # gres/gpu without device files: the allocation reports GPUs, nothing can use them


def missing_binaries() -> list[str]:
    """Slurm / munge programs that are not installed (empty when a cluster can be started)."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which is not on every PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slurm_conf_text(root: Path, host: str, cpus: int, memory_mb: int, ctld_port: int, slurmd_port: int) -> str:
    """A minimal single-node ``slurm.conf``: no cgroups, no accounting, requeue allowed, short requeue delay."""
    return f"""\
ClusterName=bloodcls-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (defaults 60 s / 30 s): a requeued job becomes eligible by time, not by an event.
SchedulerParameters=sched_interval=2,bf_interval=2
GresTypes=gpu
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ReturnToService=2
JobRequeue=1
KillWait=5
InactiveLimit=0
# sbatch --wait polls every 2 s only while MinJobAge/2 > 2 s does not hold; finished jobs stay visible 4 s.
MinJobAge=4
NodeName={host} CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory_mb} \
Gres=gpu:{FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """Handles to a running private cluster; :meth:`stop` cancels its jobs and stops the daemons."""

    root: Path
    host: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands and jobs: this cluster's config, /usr/sbin on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin"
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a client command (``squeue``, ``scontrol`` ...) against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def start(self, cpus: int, memory_mb: int, timeout: float = 30) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.conf.write_text(slurm_conf_text(self.root, self.host, cpus, memory_mb, ctld_port, slurmd_port))
        # slurmd drops GPUs without a device file; /dev/null and /dev/zero stand in (no cgroups touch them).
        fake_files = ["/dev/null", "/dev/zero"][:FAKE_GPUS]
        (self.root / "gres.conf").write_text("".join(f"NodeName={self.host} Name=gpu File={f}\n" for f in fake_files))
        munge_dir = self.root / "munge"
        self._spawn(
            "munged",
            "--foreground",
            "--force",  # a key under /tmp is "insecure" to munged; it is private to this test run
            f"--key-file={key}",
            f"--socket={munge_dir / 'munge.socket'}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={munge_dir / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        )
        self._wait_for(lambda: (munge_dir / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait_for(self._node_idle, timeout, "the node to be idle in sinfo")

    def _spawn(self, name: str, *args: str) -> None:
        exe = _which(name)
        assert exe is not None, name
        out = (self.root / "log" / f"{name}.out").open("wb")
        # A new session: terminal signals (Ctrl-C on pytest) do not reach the daemons before teardown does.
        self.procs[name] = subprocess.Popen(
            [exe, *args], stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def _node_idle(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while the cluster started:\n{self.logs()}")
        out = self.run("sinfo", "-h", "-o", "%T", check=False, timeout=10)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.logs()}")

    def job_ids(self) -> list[str]:
        out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
        return out.stdout.split() if out.returncode == 0 else []

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job (their step daemons outlive slurmd), then stop the daemons: nothing is left behind."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            ids = self.job_ids()
            if ids:
                self.run("scancel", "--full", *ids, check=False, timeout=10)
                deadline = time.monotonic() + timeout
                while self.job_ids() and time.monotonic() < deadline:
                    time.sleep(0.5)
            self._wait_steps_gone(timeout)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def _wait_steps_gone(self, timeout: float) -> None:
        # slurmstepd of a cancelled job needs a moment after squeue forgets it; each step has a socket
        # <host>_<job>.<step> in the spool dir while it lives.
        deadline = time.monotonic() + timeout
        while any((self.root / "spool").glob(f"{self.host}_*")) and time.monotonic() < deadline:
            time.sleep(0.25)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...); empty once the job is purged."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False, timeout=10)
        if out.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def start_cluster(root: Path, cpus: int | None = None, memory_mb: int = 8000) -> SlurmCluster:
    """Start munged, slurmctld and slurmd on this host; stops what was started when the cluster fails to come up."""
    cluster = SlurmCluster(root=root, host=socket.gethostname().split(".")[0])
    try:
        cluster.start(cpus=cpus or os.cpu_count() or 1, memory_mb=memory_mb)
    except BaseException:
        cluster.stop()
        raise
    return cluster
