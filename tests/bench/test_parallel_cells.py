"""bench/parallel_cells.py: cells side by side on disjoint CPUs, failures stop the queue, rows recorded once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.label_efficiency import pending_cells  # noqa: E402
from bench.parallel_cells import CpuSlot, available_cpus, run_in_slots, split_cpus  # noqa: E402


def test_cpus_split_into_disjoint_groups_that_cover_them() -> None:
    slots = split_cpus([4, 0, 1, 3, 2], 2)
    assert [s.cpus for s in slots] == [(0, 1, 2), (3, 4)]
    assert [s.cpus for s in split_cpus([0, 1], 2)] == [(0,), (1,)]
    assert [s.cpus for s in split_cpus([0, 1, 2, 3], 1)] == [(0, 1, 2, 3)]


@pytest.mark.parametrize("jobs", [0, 3])
def test_impossible_job_counts_are_refused(jobs: int) -> None:
    with pytest.raises(ValueError, match=f"--jobs {jobs}"):
        split_cpus([0, 1], jobs)


def test_a_slot_tells_its_subprocesses_how_many_threads_and_pins_them() -> None:
    slot = CpuSlot((available_cpus()[0],))
    env = slot.env({"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "8"})
    assert env["OMP_NUM_THREADS"] == env["BLOODCLS_NUM_THREADS"] == "1"
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    shown = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        env=env,
        preexec_fn=slot.pin,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == str(list(slot.cpus))


def test_tasks_share_the_slots_one_at_a_time_and_each_is_recorded_once() -> None:
    slots = split_cpus([0, 1, 2, 3], 2)
    holding: dict[tuple[int, ...], int] = {}
    guard = threading.Lock()
    most_at_once = 0
    recorded: list[tuple[int, int]] = []

    def work(task: int, slot: CpuSlot) -> int:
        nonlocal most_at_once
        with guard:
            assert slot.cpus not in holding, "two tasks on one slot"
            holding[slot.cpus] = task
            most_at_once = max(most_at_once, len(holding))
        time.sleep(0.02)
        with guard:
            del holding[slot.cpus]
        return task * 10

    run_in_slots(range(7), slots, work, lambda task, result: recorded.append((task, result)))
    assert sorted(recorded) == [(t, 10 * t) for t in range(7)]
    assert most_at_once == 2  # both slots were used at once


def test_a_failure_stops_new_tasks_and_keeps_the_rows_of_those_running() -> None:
    slots = split_cpus([0, 1], 2)
    started: list[int] = []
    recorded: list[int] = []
    slow_one_running = threading.Event()

    def work(task: int, slot: CpuSlot) -> int:
        started.append(task)
        if task == 0:
            slow_one_running.set()
            time.sleep(0.2)  # still running when task 1 fails
            return task
        slow_one_running.wait()
        raise RuntimeError(f"fit of cell {task} failed")

    with pytest.raises(RuntimeError, match="cell 1 failed"):
        run_in_slots(range(6), slots, work, lambda task, result: recorded.append(task))
    assert recorded == [0]  # the running cell finished and was recorded
    assert sorted(started) == [0, 1]  # nothing new started after the failure


def test_pending_cells_skip_the_table_and_go_seed_by_seed() -> None:
    finished = {("fixmatch-crop", "10", 0), ("supervised-crop", "all", 1)}
    cells = pending_cells([0, 1], [10, "all"], ["supervised", "fixmatch"], "crop", finished)
    assert cells == [
        (0, 10, "supervised"),
        (0, "all", "supervised"),
        (0, "all", "fixmatch"),
        (1, 10, "supervised"),
        (1, 10, "fixmatch"),
        (1, "all", "fixmatch"),
    ]
