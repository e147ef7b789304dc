"""Read an offline W&B run (``run-<id>.wandb``) back with wandb's own protobuf ``Record``.

wandb 0.31 no longer ships a Python reader for its transaction log; the file is a LevelDB-style log: a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header (CRC32,
length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) and one serialised ``Record`` per full message.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[pb.Record]:
    data = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # block trailer padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What an offline run recorded: its run record, config, history rows, summary and saved file names."""

    run: pb.RunRecord
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> OfflineRun:
        [log] = run_dir.glob("run-*.wandb")
        out: OfflineRun | None = None
        for record in read_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out = cls(run=record.run)
                out.config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
            elif out is None:
                continue
            elif kind == "config":
                out.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                out.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                out.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "files":
                out.files += [f.path for f in record.files.files]
        assert out is not None, f"{log} holds no run record"
        return out

    def values(self, key: str) -> list[Any]:
        return [row[key] for row in self.history if key in row]
