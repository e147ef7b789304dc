"""``bloodcls --help``, ``--version`` and a tool's ``--help`` import neither torch nor Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

CHECK = """
import contextlib, io, sys
from bloodcls.entry import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    main({args!r})
heavy = sorted(m for m in ("torch", "lightning", "jsonargparse", "numpy") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["download", "--help"], ["summarize", "--help"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code = (
        CHECK.format(args=args)
        .replace("    main(", "    try:\n        main(")
        .replace("\nheavy", "\n    except SystemExit as exc:\n        assert exc.code in (0, None)\nheavy")
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_cli_module_keeps_its_names() -> None:
    from bloodcls.cli import TOOL_COMMANDS, TRAINER_COMMANDS, BloodCLI, main

    assert "fit" in TRAINER_COMMANDS and "export" in TOOL_COMMANDS and callable(main) and BloodCLI.__name__
