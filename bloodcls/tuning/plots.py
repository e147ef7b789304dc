"""Sweep plots: the metric (best per trial) against each searched parameter, one PNG per parameter; for two
numeric ``choice`` parameters (a grid) also the metric against the first with one line per value of the second, as
the pseudo-labeling papers draw accuracy against the confidence threshold per entropy threshold.

Drawn on a ``Figure`` with an explicit Agg canvas (like the test report): no display, no pyplot global state.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bloodcls.tuning.results import TrialRow
from bloodcls.tuning.space import Distribution


def short_names(keys: list[str]) -> dict[str, str]:
    """Plot file names: the last part of each dotted key, or the whole key (without init_args) when two clash."""
    last = {k: k.rsplit(".", 1)[-1] for k in keys}
    clashing = {n for n in last.values() if list(last.values()).count(n) > 1}
    return {k: (k.replace(".init_args.", ".").replace(".", "_") if n in clashing else n) for k, n in last.items()}


def means_per_value(points: list[tuple[Any, float]]) -> list[tuple[Any, float]]:
    """The mean metric for each distinct parameter value, values in sorted order (numbers) or first-seen order."""
    values: list[Any] = []
    for x, _ in points:
        if x not in values:
            values.append(x)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        values.sort()
    return [(v, mean(y for x, y in points if x == v)) for v in values]


def plot_metric_vs_param(rows: list[TrialRow], key: str, dist: Distribution, metric: str, path: Path) -> Path:
    """Scatter of each trial's best ``metric`` against its value of ``key``; for ``choice`` also the mean per value."""
    points: list[tuple[Any, float]] = [(r.params[key], r.best) for r in rows if r.best is not None and key in r.params]
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    ax = fig.add_subplot()
    categorical = dist.kind == "choice" and not dist.numeric
    labels: list[str] = []
    xs: list[float]
    if categorical:  # strings / mixed options: one x position per option, in the sweep file's order
        labels = [str(o) for o in dist.options]
        xs = [float(labels.index(str(x))) for x, _ in points]
        ax.set_xticks(range(len(labels)), labels)
    else:
        xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    # Trials ASHA (or the strategy) stopped early trained less: hollow markers, so they are not read as equals.
    early = [r.status == "stopped_early" for r in rows if r.best is not None and key in r.params]
    for stopped, label, face in ((False, "trial (best epoch)", "C0"), (True, "stopped early", "none")):
        chosen = [i for i, e in enumerate(early) if e == stopped]
        if chosen:
            ax.scatter([xs[i] for i in chosen], [ys[i] for i in chosen], c=face, ec="C0", zorder=3, label=label)
    if dist.kind == "choice" and points:
        means = means_per_value(points)
        mx = [labels.index(str(v)) if categorical else float(v) for v, _ in means]
        ax.plot(mx, [m for _, m in means], "_-", color="C3", markersize=16, zorder=2, label="mean per value")
        if not categorical:
            ax.set_xticks(mx)
    if dist.kind == "loguniform":
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (best per trial)")
    ax.set_title(f"{metric} vs {key.rsplit('.', 1)[-1]} ({len(points)} trials)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def grid_lines(rows: list[TrialRow], x_key: str, line_key: str) -> dict[Any, list[tuple[Any, float]]]:
    """For each value of ``line_key`` (sorted), the mean best metric per value of ``x_key`` (sorted); trials that
    reported nothing are left out, so a failed cell is a gap rather than a zero."""
    points = [r for r in rows if r.best is not None and x_key in r.params and line_key in r.params]
    line_values = sorted({r.params[line_key] for r in points})
    return {
        v: means_per_value([(r.params[x_key], float(r.best)) for r in points if r.params[line_key] == v])  # type: ignore[arg-type]
        for v in line_values
    }


def plot_grid_lines(rows: list[TrialRow], x_key: str, line_key: str, metric: str, path: Path) -> Path:
    """``metric`` (mean best per cell) against ``x_key``, one line per value of ``line_key``."""
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (value, means) in enumerate(grid_lines(rows, x_key, line_key).items()):
        ax.plot([float(x) for x, _ in means], [m for _, m in means], "o-", color=f"C{i % 10}", label=f"{value:g}")
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric} (best per trial, mean per cell)")
    ax.set_title(f"{metric}: {x_key.rsplit('.', 1)[-1]} x {line_key.rsplit('.', 1)[-1]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title=line_key.rsplit(".", 1)[-1], fontsize=8, title_fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_sweep(rows: list[TrialRow], space: dict[str, Distribution], metric: str, plots_dir: Path) -> list[Path]:
    """``plots_dir/<metric>_vs_<param>.png`` for every searched parameter, and
    ``<metric>_grid_<first>_by_<second>.png`` for the first two numeric ``choice`` parameters."""
    names = short_names(list(space))
    metric_name = metric.replace("/", "_")
    paths = [
        plot_metric_vs_param(rows, key, dist, metric, plots_dir / f"{metric_name}_vs_{names[key]}.png")
        for key, dist in space.items()
    ]
    grid = [key for key, dist in space.items() if dist.kind == "choice" and dist.numeric]
    if len(grid) >= 2:
        x_key, line_key = grid[:2]
        name = f"{metric_name}_grid_{names[x_key]}_by_{names[line_key]}.png"
        paths.append(plot_grid_lines(rows, x_key, line_key, metric, plots_dir / name))
    return paths
