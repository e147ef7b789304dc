"""Output files written whole or not at all, a full disk as one line, and the one rule for file paths in them."""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from bloodcls.errors import DiskFullError

_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
ESCAPE = "bloodcls-escape"  # codec error handler: every text file bloodcls.io writes is encoded with it


def _escape_undecodable(err: UnicodeError) -> tuple[str, int]:
    """File-name bytes that are not UTF-8 reach Python as lone surrogates U+DC80..U+DCFF (``os.fsdecode``);
    write each as ``\\xNN``, the byte it stands for (any other unencodable character as ``\\uNNNN``)."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start : err.end]
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" for c in bad)
    return text, err.end


codecs.register_error(ESCAPE, _escape_undecodable)


def path_text(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The one rule for a file path (or a message quoting one) in an output file or on the console: unchanged
    when it is valid UTF-8; otherwise each byte that is not UTF-8 appears as ``\\xNN`` (``café`` saved in
    Latin-1 is ``caf\\xe9.png``).

    Output files stay valid UTF-8 for any reader (pandas, spreadsheets, strict JSON parsers); rows are matched
    back by content hash, never by this text, so a display-only escape loses nothing.
    """
    raw = os.fspath(path)
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    return text.encode("utf-8", ESCAPE).decode("utf-8")


def json_safe(document: Any) -> Any:
    """``document`` with every string (keys too) passed through :func:`path_text`."""
    if isinstance(document, str):
        return path_text(document)
    if isinstance(document, dict):
        return {json_safe(k): json_safe(v) for k, v in document.items()}
    if isinstance(document, list | tuple):
        return [json_safe(v) for v in document]
    return document


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full-disk ``OSError`` raised inside the block into a ``DiskFullError`` naming ``path``."""
    try:
        yield
    except OSError as err:
        if err.errno in _FULL:
            raise DiskFullError(f"{_FULL[err.errno]} while writing {path_text(path)}") from err
        raise


def disk_full_error(err: BaseException) -> DiskFullError | None:
    """The full-disk error behind ``err`` (anywhere in its cause/context chain) as a one-line ``DiskFullError``,
    for handlers of errors raised by code that does not write through this module (e.g. a checkpoint save)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, DiskFullError):
            return current
        if isinstance(current, OSError) and current.errno in _FULL:
            where = f" while writing {path_text(current.filename)}" if current.filename else f" ({current})"
            return DiskFullError(f"{_FULL[current.errno]}{where}")
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that infer a format from it keep working) that
    replaces ``path`` when the block ends without an error; on an error it is removed and ``path`` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        with disk_full_names(target):
            yield tmp
            os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], newline: str | None = None) -> Iterator[IO[str]]:
    """A UTF-8 text file that appears at ``path`` complete, when the block ends without an error; undecodable
    file-name characters written to it follow :func:`path_text`."""
    with atomic_path(path) as tmp, tmp.open("x", encoding="utf-8", errors=ESCAPE, newline=newline) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], document: Any, indent: int | None = 2) -> Path:
    """Write ``document`` as JSON atomically, ending in a newline; non-JSON values (``Path``) via ``str``, and
    strings follow :func:`path_text` (a raw ``\\x`` would not be valid JSON, so they are cleaned first)."""
    text = json.dumps(json_safe(document), indent=indent, default=lambda value: path_text(str(value)))
    return write_text(path, text + "\n")


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a header and rows as CSV atomically."""
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def remove_outputs(*paths: str | os.PathLike[str]) -> None:
    """Remove a stage's earlier outputs before it runs, so a run that writes nothing leaves nothing that looks
    current."""
    for path in paths:
        _remove_quietly(Path(path))
