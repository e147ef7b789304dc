"""Zip archives for ``bloodcls download``: every entry checked before anything is written (no zip-slip, absolute
paths, drive letters or symbolic links), and the error type the download command reports in one line."""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

_CHUNK = 1 << 20  # 1 MiB copy buffer


class DownloadError(RuntimeError):
    """A download or extraction that failed; the message is meant for the user, not a traceback."""


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why an archive entry could write outside the destination (zip-slip), or None if it is safe."""
    name = info.filename
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "drive letter"
    if ".." in re.split(r"[/\\]", name):
        return "'..' path component"
    # Unix mode lives in the high 16 bits; a symlink entry could point anywhere once extracted.
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def safe_extract_zip(archive: Path, dest: Path) -> list[Path]:
    """Extract `archive` into `dest` after checking every entry; returns the files written.

    All entries are checked before anything is written, so a malicious archive leaves no partial output.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            if reason := _unsafe_reason(info):
                raise DownloadError(f"{archive}: refusing to extract entry {info.filename!r} ({reason})")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        targets: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in infos:
            target = (root / PurePosixPath(info.filename.replace("\\", "/"))).resolve()
            # Belt and braces: a symlink already inside dest could still redirect a harmless-looking name.
            if not target.is_relative_to(root):
                raise DownloadError(f"{archive}: refusing to extract entry {info.filename!r} (escapes {dest})")
            targets.append((info, target))

        written: list[Path] = []
        for info, target in targets:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            written.append(target)
    return written


def is_zip_archive(path: Path) -> bool:
    """A plain .zip (or a suffix-less zip); .npz, .pt, .whl and friends are zips too but must stay whole."""
    suffix = path.suffix.lower()
    return suffix == ".zip" or (suffix == "" and zipfile.is_zipfile(path))
