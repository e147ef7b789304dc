"""A content-addressed embedding cache: one folder per backbone identity (weights, preprocessing, TTA), holding
memory-mapped shards of embeddings addressed by the content hash of each input image, so any run (any split, any
label budget) over the same images and backbone reuses them and a different backbone never sees them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bloodcls.data.cache import default_cache_dir
from bloodcls.errors import UserInputError

log = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
EmbeddingDtype = Literal["float16", "float32"]


def default_embedding_dir() -> Path:
    """``$BLOODCLS_CACHE/embeddings`` (``~/.cache/bloodcls/embeddings`` by default)."""
    return default_cache_dir() / "embeddings"


def image_hashes(images: np.ndarray) -> list[str]:
    """Content hash of each network input (B, 3, S, S) uint8: its shape and pixels, i.e. the decoded image at the
    run's resolution after the evaluation transform -- what the embedding actually depends on."""
    return [
        hashlib.sha256(f"{a.shape}|{a.dtype}".encode() + np.ascontiguousarray(a).tobytes()).hexdigest() for a in images
    ]


def identity_key(identity: dict[str, Any]) -> str:
    text = json.dumps({"store_format": STORE_FORMAT_VERSION, **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EmbeddingStore:
    """Embeddings of one backbone identity under ``root/<key>/``: ``identity.json`` plus shards
    ``<digest>.npy`` (N, D) and ``<digest>.json`` (the N image hashes). A folder whose ``identity.json`` does not
    match (another backbone, preprocessing, TTA or dtype) is rebuilt from scratch, never reused."""

    def __init__(self, root: str | Path, identity: dict[str, Any], dtype: EmbeddingDtype = "float16") -> None:
        if dtype not in ("float16", "float32"):
            raise UserInputError(f"embedding dtype {dtype!r} must be float16 or float32")
        self.identity = {**identity, "dtype": dtype}
        self.dtype = np.dtype(dtype)
        self.key = identity_key(self.identity)
        self.directory = Path(root).expanduser() / self.key
        self._index: dict[str, tuple[Path, int]] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self.rebuilt = False
        self._open()

    def _open(self) -> None:
        meta = self.directory / "identity.json"
        if self.directory.exists():
            try:
                stored = json.loads(meta.read_text())
            except (OSError, ValueError):
                stored = None
            if stored != self.identity:
                log.warning(
                    "embedding cache %s was built for another backbone/preprocessing: rebuilding", self.directory
                )
                shutil.rmtree(self.directory, ignore_errors=True)
                self.rebuilt = True
        if not self.directory.exists():
            self._create()
        for hashes_file in sorted(self.directory.glob("shard-*.json")):
            array_file = hashes_file.with_suffix(".npy")
            if not array_file.exists():
                continue
            for row, h in enumerate(json.loads(hashes_file.read_text())):
                self._index[h] = (array_file, row)

    def _create(self) -> None:
        """Make the folder with its ``identity.json`` in one rename: concurrent runs (the trials of a sweep) never
        see a folder without its identity -- which would read as another backbone's and be removed under them."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        staging = self.directory.with_name(f"{self.key}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / "identity.json").write_text(json.dumps(self.identity, sort_keys=True, indent=1))
        try:
            os.rename(staging, self.directory)
        except OSError:  # another process created it first (same key: the same identity)
            shutil.rmtree(staging, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, hashes: Sequence[str]) -> list[int]:
        """Positions of ``hashes`` not in the store."""
        return [i for i, h in enumerate(hashes) if h not in self._index]

    def add(self, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        """Store ``embeddings`` (N, D) of images ``hashes`` as one new shard (written whole, then renamed)."""
        new = {h: i for i, h in enumerate(hashes) if h not in self._index}
        if not new:
            return
        keep = list(new.values())
        digest = hashlib.sha256("\n".join(new).encode()).hexdigest()[:24]
        array_file = self.directory / f"shard-{digest}.npy"
        hashes_file = array_file.with_suffix(".json")
        tmp_array = self.directory / f"shard-{digest}.{os.getpid()}.tmp.npy"
        tmp_hashes = self.directory / f"shard-{digest}.{os.getpid()}.tmp.txt"
        try:
            np.save(tmp_array, np.asarray(embeddings[keep], dtype=self.dtype))
            tmp_hashes.write_text(json.dumps(list(new)))
            os.replace(tmp_array, array_file)
            os.replace(tmp_hashes, hashes_file)  # last: a shard is visible only when complete
        except BaseException:
            for leftover in (tmp_array, tmp_hashes):
                leftover.unlink(missing_ok=True)
            raise
        for row, h in enumerate(new):
            self._index[h] = (array_file, row)

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Embeddings (N, D) float32 of ``hashes`` (all must be stored)."""
        rows = []
        for h in hashes:
            file, row = self._index[h]
            if file not in self._arrays:
                self._arrays[file] = np.load(file, mmap_mode="r")
            rows.append(np.asarray(self._arrays[file][row], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)
