"""bloodcls.allocator: with freed memory kept, a large block comes from the heap and is reused there, instead of
being mapped from the kernel and unmapped on every allocation (glibc's ``mallinfo2`` shows where it went)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bloodcls.allocator import MALLOC_ENV, freed_memory_kept, keep_freed_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")
BLOCK = 64 * 2**20  # over glibc's largest mmap threshold (32 MiB): mmapped by default


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo() -> MallInfo2:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def _where_a_block_lives() -> tuple[int, int]:
    """(growth of mmapped bytes, growth of the heap) while one BLOCK is alive, after one was freed before."""
    first = np.ones(BLOCK, np.uint8)
    del first
    before = _mallinfo()
    second = np.ones(BLOCK, np.uint8)
    during = _mallinfo()
    del second
    return during.hblkhd - before.hblkhd, during.arena - before.arena


def _in_a_fresh_interpreter(check: str, malloc: str | None = None) -> None:
    """Run ``check`` of this module in a new Python: in the test process, earlier fits (BloodCLI keeps freed memory)
    have already changed the malloc settings and left free heap behind."""
    env = {k: v for k, v in os.environ.items() if k != MALLOC_ENV}
    if malloc is not None:
        env[MALLOC_ENV] = malloc
    code = f"import sys; sys.path.insert(0, sys.argv[1]); import test_allocator as t; t.{check}()"
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _kept_memory_check() -> None:
    """Run in a fresh interpreter: in the test process, earlier fits (BloodCLI keeps freed memory) leave free heap
    that would serve the 'default' block too, whatever the settings now are."""
    assert keep_freed_memory(False) is False
    mapped, _ = _where_a_block_lives()
    assert mapped >= BLOCK  # glibc's default: fresh pages from the kernel for every big block
    assert keep_freed_memory() is True and freed_memory_kept()
    mapped, grown = _where_a_block_lives()
    assert mapped == 0 and grown == 0  # the freed first block's heap memory served the second
    assert _mallinfo().fordblks >= BLOCK  # and stays in the heap, free, after both are gone


@glibc_only
def test_kept_memory_serves_big_blocks_from_the_heap_and_reuses_them() -> None:
    _in_a_fresh_interpreter("_kept_memory_check")


def _undo_check() -> None:
    """After keep then undo, a 16 MiB block is served from the heap again, as by glibc's adapted dynamic threshold
    (a 128 KiB static threshold would map it afresh every time)."""
    assert keep_freed_memory() is True
    assert keep_freed_memory(False) is False
    first = np.ones(16 * 2**20, np.uint8)
    del first
    before = _mallinfo()
    second = np.ones(16 * 2**20, np.uint8)
    assert _mallinfo().hblkhd - before.hblkhd == 0
    del second


@glibc_only
def test_undoing_the_kept_settings_keeps_glibcs_adapted_threshold() -> None:
    _in_a_fresh_interpreter("_undo_check")


def _default_check() -> None:
    assert keep_freed_memory() is False and not freed_memory_kept()


@glibc_only
def test_bloodcls_malloc_default_leaves_glibc_alone() -> None:
    _in_a_fresh_interpreter("_default_check", malloc="default")


@glibc_only
def test_bloodcls_malloc_default_undoes_an_earlier_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MALLOC_ENV, raising=False)
    assert keep_freed_memory() is True
    monkeypatch.setenv(MALLOC_ENV, "default")
    try:
        assert keep_freed_memory() is False and not freed_memory_kept()
    finally:
        monkeypatch.delenv(MALLOC_ENV)
        keep_freed_memory()  # the state this test process had (BloodCLI keeps freed memory)
