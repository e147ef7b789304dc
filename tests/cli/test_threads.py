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
