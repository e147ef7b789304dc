"""Decode-once cache: every image is hashed, decoded and resized once to the training resolution into a uint8
array (in memory, or a memory-mapped ``.npy`` keyed by the content hashes and size), so later epochs and later
runs never decode a JPEG again. Files that cannot be decoded are reported, not raised, so one bad file in a
dataset of thousands is skipped with a warning instead of killing a dataloader worker mid-epoch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from bloodcls.data.images import BadImageError, decode_image, draft_size_for, read_bytes, resize_square
from bloodcls.data.splits import content_hash
from bloodcls.io import disk_full_names

log = logging.getLogger(__name__)

CacheMode = Literal["memory", "disk"]
CACHE_FORMAT_VERSION = 1
T = TypeVar("T")
R = TypeVar("R")


def default_cache_dir() -> Path:
    """``$BLOODCLS_CACHE`` or ``~/.cache/bloodcls``."""
    return Path(os.environ.get("BLOODCLS_CACHE", Path.home() / ".cache" / "bloodcls")).expanduser()


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    # Threads, not processes: PIL's decoders, cv2.resize and hashlib release the GIL, and threads avoid
    # fork-after-torch hazards and the cost of spawning interpreters.
    if workers <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=32))


@dataclass
class DecodedImages:
    """Images of a listing at one resolution; rows of failed files are zero and listed in ``errors``."""

    images: np.ndarray  # (N, S, S, 3) uint8, possibly a read-only memmap
    hashes: list[str]  # content hash per row ("" when the file could not be read)
    errors: dict[int, str] = field(default_factory=dict)  # row -> reason
    cache_file: Path | None = None

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.hashes), dtype=bool)
        mask[list(self.errors)] = False
        return mask


def hash_files(paths: Sequence[str], workers: int) -> tuple[list[str], dict[int, str]]:
    """Content hash of every file; unreadable or empty files get "" and an error."""

    def one(path: str) -> tuple[str, str | None]:
        try:
            data = read_bytes(path)
        except BadImageError as err:
            return "", str(err)
        if not data:
            return "", f"{path}: empty file"
        return content_hash(data), None

    results = _parallel_map(one, paths, workers)
    errors = {i: err for i, (_, err) in enumerate(results) if err is not None}
    return [h for h, _ in results], errors


def hash_arrays(arrays: np.ndarray) -> list[str]:
    """Content hash of each in-memory image (its shape is part of the key)."""
    return [content_hash(f"{a.shape}".encode() + np.ascontiguousarray(a).tobytes()) for a in arrays]


def cache_key(hashes: Sequence[str], size: int, crop: float = 1.0) -> str:
    # A whole-image cache keeps its pre-crop key, so caches built before data.center_crop existed stay valid.
    crop_part = "" if crop == 1 else f"crop{crop!r}|"
    digest = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|{size}|{crop_part}".encode())
    for h in hashes:
        digest.update(h.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _decode_into(
    out: np.ndarray,
    paths: Sequence[str],
    rows: Sequence[int],
    size: int,
    max_pixels: int,
    workers: int,
    crop: float = 1.0,
) -> dict[int, str]:
    """Decode ``paths[row]`` into ``out[row]`` for the given rows; return row -> error."""

    def one(row: int) -> str | None:
        path = paths[row]
        try:
            image = decode_image(read_bytes(path), path, max_pixels=max_pixels, draft_size=draft_size_for(size, crop))
            out[row] = resize_square(image, size, crop)
        except BadImageError as err:
            return str(err)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file, not a crash
            return f"{path}: cannot decode image ({type(err).__name__}: {err})"
        return None

    results = _parallel_map(one, list(rows), workers)
    return {row: err for row, err in zip(rows, results, strict=True) if err is not None}


def decode_files(
    paths: Sequence[str],
    size: int,
    *,
    mode: CacheMode = "memory",
    cache_dir: str | Path | None = None,
    max_pixels: int = 100_000_000,
    workers: int | None = None,
    crop: float = 1.0,
) -> DecodedImages:
    """Hash and decode ``paths`` to (N, size, size, 3) uint8 (the central ``crop`` of each side, resized), reusing a
    disk cache when one matches."""
    workers = workers or default_workers()
    hashes, errors = hash_files(paths, workers)
    if mode == "memory":
        images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
        todo = [i for i in range(len(paths)) if i not in errors]
        errors.update(_decode_into(images, paths, todo, size, max_pixels, workers, crop))
        return DecodedImages(images=images, hashes=hashes, errors=errors)

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(hashes, size, crop)
    array_file, meta_file = directory / f"{key}.npy", directory / f"{key}.json"
    if array_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        images = np.load(array_file, mmap_mode="r")
        if images.shape == (len(paths), size, size, 3) and meta.get("max_pixels") == max_pixels:
            errors.update({int(k): v for k, v in meta["errors"].items()})
            log.info("decode cache hit: %s", array_file)
            return DecodedImages(images=images, hashes=hashes, errors=errors, cache_file=array_file)
    # Build under a temporary name and rename when complete, so an interrupted run never leaves a
    # half-written cache that a later run would trust.
    tmp_file = directory / f"{key}.{os.getpid()}.tmp.npy"
    meta_tmp = directory / f"{key}.{os.getpid()}.tmp.json"
    try:
        with disk_full_names(array_file):
            images = np.lib.format.open_memmap(tmp_file, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
            _reserve(tmp_file)
            todo = [i for i in range(len(paths)) if i not in errors]
            errors.update(_decode_into(images, paths, todo, size, max_pixels, workers, crop))
            images.flush()
            del images
            meta = {"size": size, "crop": crop, "max_pixels": max_pixels, "n": len(paths), "errors": errors}
            meta_tmp.write_text(json.dumps(meta))
            os.replace(tmp_file, array_file)
            os.replace(meta_tmp, meta_file)
    except BaseException:
        for leftover in (tmp_file, meta_tmp):
            leftover.unlink(missing_ok=True)
        raise
    return DecodedImages(images=np.load(array_file, mmap_mode="r"), hashes=hashes, errors=errors, cache_file=array_file)


def _reserve(path: Path) -> None:
    """Allocate the memory-mapped file's blocks now: a full disk is then an ENOSPC error here, not a SIGBUS
    crash on the first write into a page the filesystem cannot back."""
    with path.open("r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, path.stat().st_size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # filesystems without it
                raise
        except AttributeError:  # no posix_fallocate on this platform (macOS)
            pass


def resize_arrays(arrays: np.ndarray, size: int, workers: int | None = None, crop: float = 1.0) -> np.ndarray:
    """Bring an in-memory (N, H, W, 3) uint8 dataset to (N, size, size, 3) (the central ``crop`` of each side)."""
    if arrays.shape[1:3] == (size, size) and crop == 1:
        return np.ascontiguousarray(arrays, dtype=np.uint8)
    out = np.empty((len(arrays), size, size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = resize_square(np.asarray(arrays[i], dtype=np.uint8), size, crop)

    _parallel_map(one, list(range(len(arrays))), workers or default_workers())
    return out
