"""A ``path,label`` CSV manifest (e.g. a CellaVision export) as a data source."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bloodcls.data.sources.base import DataSource, SourceListing, require_root
from bloodcls.errors import MissingPathError, UserInputError


def list_csv_manifest(csv_path: str | Path) -> SourceListing:
    """List a ``path,label`` CSV; relative paths are relative to the CSV's folder. Missing files are skipped."""
    csv_file = Path(csv_path).expanduser()
    if not csv_file.is_file():
        raise MissingPathError(f"data.root: manifest {csv_file} does not exist")
    with csv_file.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields or "label" not in fields:
            raise UserInputError(f"{csv_file}: expected a header with 'path' and 'label' columns, got {fields}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, str]] = []
    for line_no, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            skipped.append((f"{csv_file}:{line_no}", "empty path or label"))
            continue
        path = Path(row["path"]).expanduser()
        if not path.is_absolute():
            path = csv_file.parent / path
        if not path.is_file():
            skipped.append((str(path), "file not found"))
            continue
        entries.append((str(path), row["label"]))
    class_names = sorted({label for _, label in entries})
    index = {name: i for i, name in enumerate(class_names)}
    return SourceListing(
        class_names=class_names,
        ids=[p for p, _ in entries],
        labels=np.asarray([index[label] for _, label in entries], dtype=np.int64),
        skipped=skipped,
    )


class CsvSource(DataSource):
    """A CSV with a ``path,label`` header; relative paths are relative to the CSV's folder, missing files are
    skipped and reported.

    Args:
        root: the CSV file.
    """

    has_root = True

    def __init__(self, root: str | None = None) -> None:
        self.root = root

    @property
    def kind(self) -> str:
        return "csv"

    def class_names(self) -> list[str]:
        return list_csv_manifest(require_root(self)).class_names

    def listing(self, image_size: int) -> SourceListing:
        return list_csv_manifest(require_root(self))
