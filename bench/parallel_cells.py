"""Run a long benchmark's independent cells side by side, each on its own share of the CPUs.

The cells of a grid (strategy x budget x seed) are independent, and one training process rarely keeps every core
busy (its threads wait for each other at every small operator). ``--jobs N`` splits the CPUs this process may use
into N disjoint groups; each cell's subprocesses are pinned to one group (``sched_setaffinity``) and told its size
(``OMP_NUM_THREADS`` and ``BLOODCLS_NUM_THREADS``), so jobs never fight over a core.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class CpuSlot:
    """The CPUs one job may use, and the environment that tells its subprocesses so."""

    cpus: tuple[int, ...]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        threads = str(len(self.cpus))
        return {**(os.environ if base is None else base), "OMP_NUM_THREADS": threads, "BLOODCLS_NUM_THREADS": threads}

    def pin(self) -> None:
        """``preexec_fn`` of a subprocess: keep it (and the threads it starts) on this slot's CPUs."""
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)


def split_cpus(cpus: Sequence[int], jobs: int) -> list[CpuSlot]:
    """``jobs`` disjoint groups of CPUs, as even as they can be (the first groups get the spare ones)."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: at least one job")
    if jobs > len(cpus):
        raise ValueError(f"--jobs {jobs}: only {len(cpus)} CPUs to share (one job needs a CPU of its own)")
    ordered = sorted(cpus)
    size, spare = divmod(len(ordered), jobs)
    slots, start = [], 0
    for k in range(jobs):
        end = start + size + (1 if k < spare else 0)
        slots.append(CpuSlot(tuple(ordered[start:end])))
        start = end
    return slots


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def run_in_slots(
    tasks: Iterable[T],
    slots: Sequence[CpuSlot],
    work: Callable[[T, CpuSlot], R],
    done: Callable[[T, R], None],
) -> None:
    """Run ``work(task, slot)`` for every task, at most one task per slot at a time, and call ``done(task, result)``
    (serialised: it may append to a shared file) as each finishes. The first failure stops new tasks from starting;
    the running ones finish and are recorded, then the failure is raised."""
    free: queue.Queue[CpuSlot] = queue.Queue()
    for slot in slots:
        free.put(slot)
    record = threading.Lock()
    stop = threading.Event()

    def one(task: T) -> None:
        if stop.is_set():
            return
        slot = free.get()
        try:
            if stop.is_set():
                return
            result = work(task, slot)
        except BaseException:
            stop.set()
            raise
        finally:
            free.put(slot)
        with record:
            done(task, result)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = [pool.submit(one, task) for task in tasks]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in finished if f.exception() is not None]
        if failed:
            stop.set()
            wait(futures)
            raise failed[0].exception()  # type: ignore[misc]
