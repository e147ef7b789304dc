"""glibc malloc settings for CPU training: keep freed memory for reuse instead of giving it back to the system.

glibc serves every allocation over its mmap threshold (at most 32 MiB) with fresh pages from the kernel and
unmaps them on free. A training step allocates activations of tens of MiB and frees them again, so every step
page-faults its activations into existence: on this repository's 2-core machine a ReLU over a 126 MB bf16 tensor
took 138 ms, 21 ms with the settings below (``bench/throughput.py`` measures the effect on training). Serving
large blocks from the heap and not trimming it keeps those pages mapped: the process's resident memory stays at
its peak instead of shrinking between steps, which a training process reaches in its first steps anyway.

``BLOODCLS_MALLOC=default`` leaves glibc as it is. Other C libraries (macOS, Windows, musl) are left alone.

Undoing the settings (``keep_freed_memory(False)``, or the opt-out set after a keep) cannot bring back glibc's
*dynamic* mmap threshold: any mallopt of these parameters turns it off for the process. It sets the state that
threshold converges to instead (blocks up to 32 MiB from the heap, trim beyond twice that), not the 128 KiB start
value, which would map every activation afresh each step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MALLOC_ENV = "BLOODCLS_MALLOC"
M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
KEEP_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: trim only beyond 2 GiB of free heap top
GLIBC_MMAP_MAX = 65536  # glibc's default, restored by keep_freed_memory(False)
GLIBC_MMAP_THRESHOLD = 32 * 2**20  # where glibc's dynamic threshold ends up (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit)
GLIBC_TRIM_THRESHOLD = 2 * GLIBC_MMAP_THRESHOLD  # the dynamic rule keeps trim at twice the mmap threshold

_state: dict[str, bool] = {"kept": False}


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_freed_memory(keep: bool = True) -> bool:
    """Serve large allocations from the heap and never trim it (``keep``), or undo that (see above). Returns
    whether the settings now in force are the kept ones; ``False`` without glibc or with ``BLOODCLS_MALLOC=default``.
    Only later allocations follow a change, so it can be switched between phases of one process."""
    if keep and os.environ.get(MALLOC_ENV, "").strip().lower() == "default":
        if not _state["kept"]:
            return False  # glibc untouched: its own dynamic mmap threshold stays in force
        keep = False  # the opt-out set after an earlier keep in this process: undo it rather than report a lie
    libc = _glibc()
    if libc is None:
        return False
    if keep:
        settings = [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)]
    else:
        settings = [
            (M_MMAP_MAX, GLIBC_MMAP_MAX),
            (M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD),
        ]
    ok = all(bool(libc.mallopt(param, value)) for param, value in settings)
    _state["kept"] = keep and ok
    return _state["kept"]


def freed_memory_kept() -> bool:
    """Whether this process runs with ``keep_freed_memory``'s settings."""
    return _state["kept"]
