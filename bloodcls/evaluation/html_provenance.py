"""Run and data provenance for the HTML report: where the run's files are, git commit, package versions, the data."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bloodcls.evaluation.html_page import esc, note, table

PACKAGES = ("bloodcls", "torch", "torchvision", "lightning", "timm", "numpy", "scikit-learn", "grad-cam")
SHOWN_ENTRIES = 20  # skipped files / duplicate groups listed in full up to this many


def fit_run_dir(out_dir: Path, ckpt_path: str | None) -> Path:
    """The fit run a test report belongs to: ``RUN`` of ``RUN/checkpoints/x.ckpt``, else the report's parent."""
    if ckpt_path:
        ckpt = Path(ckpt_path)
        if ckpt.parent.name == "checkpoints":
            return ckpt.parent.parent
    return out_dir.parent


def find_file(name: str, *dirs: Path) -> Path | None:
    """The first ``dirs[i] / name`` that exists."""
    for directory in dirs:
        if (directory / name).is_file():
            return directory / name
    return None


def read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def git_commit(repo: Path | None = None) -> str:
    """``<sha>`` (``+ uncommitted changes`` when dirty) of the checkout bloodcls runs from, or why it is unknown."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout, or git is not installed)"
    return sha + (" + uncommitted changes" if dirty else "")


def package_versions() -> list[tuple[str, str]]:
    rows = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return rows


def _listing(title: str, entries: list[Any]) -> str:
    if not entries:
        return f"<p>{esc(title)}: none.</p>"
    shown = [json.dumps(e) if not isinstance(e, str) else e for e in entries[:SHOWN_ENTRIES]]
    more = f" (first {SHOWN_ENTRIES} shown)" if len(entries) > SHOWN_ENTRIES else ""
    items = "".join(f"<li>{esc(s)}</li>" for s in shown)
    return f"<details><summary>{esc(title)}: {len(entries)}{more}</summary><ul>{items}</ul></details>"


def data_section(report: dict[str, Any] | None) -> str:
    """Split sizes per class, skipped files, duplicate groups and label conflicts from data_report.json."""
    if report is None:
        return note("data_report.json was not found next to the run: no data provenance.")
    names = [str(n) for n in report.get("class_names", [])]
    facts = [
        ("source", report.get("source")),
        ("root", report.get("root")),
        ("image size", report.get("image_size")),
        ("images listed", report.get("n_listed")),
        ("images usable", report.get("n_usable")),
    ]
    parts = [table(["", "value"], [(k, "" if v is None else v) for k, v in facts], left_columns=2)]
    subsets: dict[str, list[int]] = report.get("subset_counts") or {}
    if subsets:
        rows = [[name, sum(counts), *counts] for name, counts in subsets.items()]
        parts.append("<h3>Split sizes</h3>" + table(["subset", "total", *names], rows))
    parts.append(_listing("Skipped files", list(report.get("skipped", []))))
    parts.append(
        _listing("Duplicate groups (identical images kept in one subset)", list(report.get("duplicate_groups", [])))
    )
    parts.append(_listing("Label conflicts", list(report.get("label_conflicts", []))))
    return "\n".join(parts)


def run_section(run_info: dict[str, Any], config: Path | None) -> str:
    """Checkpoint, git commit, package versions, and the resolved config (collapsed)."""
    rows: list[tuple[str, Any]] = [("checkpoint", run_info.get("ckpt_path") or "(none)"), ("git commit", git_commit())]
    parts = [table(["", "value"], rows, left_columns=2)]
    parts.append("<h3>Package versions</h3>" + table(["package", "version"], package_versions(), left_columns=2))
    if config is not None:
        text = config.read_text(encoding="utf-8", errors="replace")
        parts.append(f"<details><summary>Configuration ({esc(config.name)})</summary><pre>{esc(text)}</pre></details>")
    else:
        parts.append(note("config.yaml was not found next to the run."))
    return "\n".join(parts)
