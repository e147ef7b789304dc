"""The CPU thread count: affinity minus loader workers, BLOODCLS_NUM_THREADS / OMP_NUM_THREADS when given."""

from __future__ import annotations

import pytest

from bloodcls.errors import UserInputError
from bloodcls.threads import choose_threads, thread_notice


@pytest.mark.parametrize(
    ("env", "cpus", "workers", "expected"),
    [
        ({}, 16, 2, (14, "auto")),  # loader workers get cores of their own
        ({}, 2, 2, (1, "auto")),  # never 0
        ({}, 8, 0, (8, "auto")),
        ({"OMP_NUM_THREADS": "3"}, 16, 2, (3, "OMP_NUM_THREADS")),  # an explicit OMP_NUM_THREADS is respected
        ({"OMP_NUM_THREADS": "3", "BLOODCLS_NUM_THREADS": "5"}, 16, 2, (5, "BLOODCLS_NUM_THREADS")),
        ({"BLOODCLS_NUM_THREADS": " "}, 4, 1, (3, "auto")),  # empty: unset
    ],
)
def test_choose_threads(env: dict[str, str], cpus: int, workers: int, expected: tuple[int, str]) -> None:
    assert choose_threads(env, cpus, workers) == expected


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_count_is_a_user_error(value: str) -> None:
    with pytest.raises(UserInputError, match=f"BLOODCLS_NUM_THREADS={value}"):
        choose_threads({"BLOODCLS_NUM_THREADS": value}, 4, 0)


def test_notice_says_how_to_override() -> None:
    assert thread_notice(1, "auto") == "bloodcls: using 1 CPU thread (override with BLOODCLS_NUM_THREADS=N)"
    assert "set by OMP_NUM_THREADS" in thread_notice(4, "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    ("cpus", "on_gpu", "expected"),
    [(2, False, 0), (64, False, 0), (2, True, 1), (16, True, 8), (64, True, 8), (1, True, 0)],
)
def test_auto_loader_workers_leave_the_cpu_to_a_cpu_model(cpus: int, on_gpu: bool, expected: int) -> None:
    from bloodcls.threads import auto_loader_workers

    assert auto_loader_workers(cpus, on_gpu) == expected


def test_null_num_workers_is_resolved_from_the_accelerator_before_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from jsonargparse import Namespace

    from bloodcls import cli, threads

    monkeypatch.setattr(cli, "available_cpus", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def resolved(accelerator: str, workers: int | None) -> int:
        config = Namespace(trainer=Namespace(accelerator=accelerator), data=Namespace(init_args=Namespace()))
        config.data.init_args.num_workers = workers
        cli._resolve_num_workers(config)
        return int(config.data.init_args.num_workers)

    assert resolved("cpu", None) == 0 and resolved("auto", None) == 0  # no GPU: the cores stay with the model
    assert resolved("gpu", None) == 8 and resolved("cuda", None) == 8
    assert resolved("cpu", 3) == 3  # an explicit number is the user's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolved("auto", None) == 8 and threads.accelerator_is_gpu("auto")
