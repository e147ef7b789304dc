"""How many CPU threads torch may use: the CPUs this process may run on, less the data loader workers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bloodcls.errors import UserInputError

THREADS_ENV = "BLOODCLS_NUM_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a Slurm allocation or ``taskset``, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


MAX_AUTO_WORKERS = 8  # loader processes that keep one GPU fed from the uint8 cache; more only add start-up time


def auto_loader_workers(cpus: int, on_gpu: bool) -> int:
    """Loader processes for ``data.num_workers: null``. None when the model trains on the CPU: augmenting a cached
    uint8 batch costs ~1 % of a step, and every worker takes a core from the model's threads (on 2 CPUs, 2 workers
    left ResNet-18 one thread and half its speed: README "Speed on a CPU"). With a GPU the CPUs are free to
    augment: half of them, at most ``MAX_AUTO_WORKERS``."""
    if not on_gpu:
        return 0
    return max(0, min(MAX_AUTO_WORKERS, cpus // 2))


def accelerator_is_gpu(accelerator: object) -> bool:
    """Whether a ``trainer.accelerator`` setting trains on an accelerator rather than the CPU (``auto``: whether
    torch sees a GPU)."""
    name = str(accelerator or "auto").lower()
    if name == "cpu" or "CPUAccelerator" in name:
        return False
    return gpu_visible() if name == "auto" else True


def gpu_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_threads(env: Mapping[str, str], cpus: int, loader_workers: int) -> tuple[int, str]:
    """The intra-op thread count and where it came from: ``BLOODCLS_NUM_THREADS``, else an explicit
    ``OMP_NUM_THREADS``, else the CPUs left after the loader workers (each worker is a busy process of its own;
    more threads than free cores makes every step wait for the slowest thread), at least 1."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if not value:
            continue
        if not value.isdigit() or int(value) < 1:
            raise UserInputError(f"{name}={value}: give a whole number of threads, at least 1")
        return int(value), name
    return max(1, cpus - max(0, loader_workers)), "auto"


def thread_notice(threads: int, source: str) -> str:
    noun = "thread" if threads == 1 else "threads"
    where = "" if source == "auto" else f"set by {source}; "
    return f"bloodcls: using {threads} CPU {noun} ({where}override with {THREADS_ENV}=N)"


def apply_thread_count(data_config: Any) -> int:
    """Set torch's thread count for this run from the data config's ``num_workers``; says so once on rank 0."""
    import torch
    from lightning.pytorch.utilities import rank_zero_info

    args = data_config.get("init_args") if hasattr(data_config, "get") else None
    workers = args.get("num_workers") if args is not None and hasattr(args, "get") else None
    threads, source = choose_threads(os.environ, available_cpus(), int(workers or 0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    rank_zero_info(thread_notice(threads, source))
    return threads
