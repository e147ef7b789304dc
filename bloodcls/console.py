"""A quiet console for bloodcls runs: one-line warnings, and a SIGUSR1 outside Slurm that does not kill the run."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType

PACKAGE_DIR = Path(__file__).resolve().parent


def is_own_file(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """One line per warning: ``bloodcls: warning: ...`` for bloodcls's own, ``warning: ... (<Category>, <package>)``
    for a library's -- no source path, no code line."""
    text = " ".join(str(message).split())
    if is_own_file(filename):  # also rank_zero_warn from bloodcls: it points at its caller
        return f"bloodcls: warning: {text}\n"
    return f"warning: {text} ({category.__name__} from {package_of(filename)})\n"


def package_of(filename: str) -> str:
    """``lightning`` for ``.../site-packages/lightning/pytorch/trainer/trainer.py``; the file name elsewhere."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1]
    return Path(filename).name


def quiet_console() -> None:
    """Install the one-line warning format (after Lightning installed its own at import)."""
    warnings.formatwarning = format_warning


def ignore_sigusr1_outside_slurm() -> None:
    """SIGUSR1's default action ends the process without a word. Inside a Slurm job Lightning handles it (save
    and requeue), so it is left alone there; elsewhere it is ignored with a one-line notice."""
    if "SLURM_JOB_ID" in os.environ or not hasattr(signal, "SIGUSR1"):
        return
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (in-process callers such as Ray trials)
    if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
        return  # someone (a launcher, a test) already handles it

    def notice(signum: int, frame: FrameType | None) -> None:
        print("bloodcls: SIGUSR1 ignored (not in a Slurm job; stop a run with Ctrl-C or SIGTERM)", file=sys.stderr)

    signal.signal(signal.SIGUSR1, notice)
