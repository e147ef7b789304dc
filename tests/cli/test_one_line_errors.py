"""Every config mistake is one ``bloodcls <command>: error:`` line on stderr naming the key or file, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, run_cli

from bloodcls.cli import main

BASE = str(REPO / "configs" / "quickstart.yaml")


def _error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no usage block, no traceback
    return lines[0]


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_unknown_key(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of([command, "--config", BASE, "--data.init_args.no_such_key", "1"], capsys)
    assert line.startswith(f"bloodcls {command}: error: ") and "no_such_key" in line


def test_bad_value_type(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["fit", "--config", BASE, "--trainer.max_epochs", "abc"], capsys)
    assert line.startswith("bloodcls fit: error: ") and "trainer.max_epochs" in line and "abc" in line


def test_bad_choice(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["fit", "--config", BASE, "--data.init_args.cache", "nope"], capsys)
    assert "cache" in line and "nope" in line and "'memory', 'disk'" in line


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 2\n  devices: [1\n")
    line = _error_of(["fit", "--config", BASE, "--config", str(bad)], capsys)
    assert line.startswith(f"bloodcls fit: error: {bad}:4: not a valid YAML config"), line


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["test", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml" in line and "does not exist" in line


def test_tool_command_errors_stay_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_of(["summarize", "runs/x", "--no_such_option"], capsys)
    assert line.startswith("bloodcls summarize: error: ") and "--no_such_option" in line


@pytest.mark.slow  # starts the console script (a torch + Lightning import: seconds)
def test_a_real_process_prints_one_line(tmp_path: Path) -> None:
    result = run_cli("fit", "--config", BASE, "--trainer.max_epochs", "abc", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bloodcls fit: error: Parser key \"trainer.max_epochs\": Expected a <class 'int'> Given value: abc"
    ]
