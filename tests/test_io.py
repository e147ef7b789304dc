"""bloodcls.io: the one rule for non-UTF-8 file names in output files, atomic writes, and a full disk as one line."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bloodcls import io as bio
from bloodcls.errors import DiskFullError, UserInputError

LATIN1_NAME = os.fsdecode(b"/data/monocyte/caf\xe9.png")  # how Python lists a Latin-1 file name on Linux


def _fail_with(code: int) -> Any:
    def replace(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code), str(src))

    return replace


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/data/café.png", "/data/café.png"),  # valid UTF-8: unchanged
        (LATIN1_NAME, "/data/monocyte/caf\\xe9.png"),
        (os.fsencode(LATIN1_NAME), "/data/monocyte/caf\\xe9.png"),
        (Path(LATIN1_NAME), "/data/monocyte/caf\\xe9.png"),
        ("a\ud800b", "a\\ud800b"),  # a surrogate that is no file-name byte: escaped, never a crash
    ],
)
def test_path_text(path: Any, text: str) -> None:
    assert bio.path_text(path) == text
    text.encode("utf-8")  # always encodable


def test_csv_and_json_with_an_undecodable_name_are_valid_utf8(tmp_path: Path) -> None:
    bio.write_csv(tmp_path / "p.csv", ["path", "reason"], [(LATIN1_NAME, f"{LATIN1_NAME}: not an image")])
    rows = list(csv.reader((tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[1] == ["/data/monocyte/caf\\xe9.png", "/data/monocyte/caf\\xe9.png: not an image"]

    bio.write_json(tmp_path / "r.json", {"skipped": [{"file": Path(LATIN1_NAME)}], LATIN1_NAME: 1})
    document = json.loads((tmp_path / "r.json").read_bytes().decode("utf-8"))  # strict UTF-8 and strict JSON
    assert document == {"skipped": [{"file": "/data/monocyte/caf\\xe9.png"}], "/data/monocyte/caf\\xe9.png": 1}


def test_atomic_open_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "predictions.csv"
    target.write_text("old,complete\n")
    with pytest.raises(RuntimeError), bio.atomic_open(target) as fh:
        fh.write("new,half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old,complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no temp file left


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        bio.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk quota exceeded")])
def test_full_disk_is_a_one_line_user_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text('{"acc": 0.9}\n')
    monkeypatch.setattr(bio.os, "replace", _fail_with(code))
    with pytest.raises(DiskFullError) as err:
        bio.write_json(target, {"acc": 0.5})
    assert str(err.value) == f"{words} while writing {target}" and isinstance(err.value, UserInputError)
    assert target.read_text() == '{"acc": 0.9}\n' and len(list(tmp_path.iterdir())) == 1


def test_other_os_errors_are_not_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bio.os, "replace", _fail_with(errno.EACCES))
    with pytest.raises(PermissionError):
        bio.write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_remove_outputs_ignores_missing_files(tmp_path: Path) -> None:
    (tmp_path / "predictions.csv").write_text("stale\n")
    bio.remove_outputs(tmp_path / "predictions.csv", tmp_path / "predictions_skipped.csv")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_error_finds_enospc_behind_another_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/v0/checkpoints/best.ckpt")
        except OSError as inner:
            raise RuntimeError("checkpoint save failed") from inner
    except RuntimeError as err:
        found = bio.disk_full_error(err)
    assert found is not None and str(found) == "disk full while writing /runs/v0/checkpoints/best.ckpt"
    assert bio.disk_full_error(OSError(errno.EACCES, "denied")) is None
    assert str(bio.disk_full_error(OSError(errno.EDQUOT, "Disk quota exceeded"))).startswith("disk quota exceeded (")
