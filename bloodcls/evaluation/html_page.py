"""Building blocks of the self-contained HTML reports: escaping, base64 images, tables, sections, the page shell."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

# Inline CSS only: the page must open from a mail attachment or an air-gapped workstation, with no network.
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.2em 1.6em 3em; color: #1d232a; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #dfe4ea; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin: 1.1em 0 0.4em; }
.sub { color: #5b6670; margin-top: 0; }
.note { color: #5b6670; font-size: 0.92em; }
.warn { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #d5dbe1; padding: 0.25em 0.55em; text-align: right; }
th { background: #f2f5f8; }
td.l, th.l { text-align: left; }
td.diag { font-weight: bold; outline: 2px solid #2f6db5; outline-offset: -2px; }
img.plot.narrow { max-width: 560px; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.4em 0 1em; border: 1px solid #eef0f3; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.6em; margin-bottom: 0.8em; }
figure { margin: 0; width: 200px; font-size: 0.8em; }
figure img { width: 200px; height: auto; image-rendering: pixelated; display: block; }
figure.thumb, figure.thumb img { width: 112px; }
figcaption { color: #39424b; overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: 0.7em; overflow-x: auto; font-size: 0.82em; max-height: 30em; }
details { margin: 0.4em 0 0.8em; }
summary { cursor: pointer; font-weight: 600; }
nav a { margin-right: 0.9em; }
"""


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute (class names and file paths come from the user's folders)."""
    return html.escape(str(value), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_img(path: Path, alt: str, css: str = "plot") -> str:
    """An ``<img>`` carrying the PNG file inline, or "" when the file is absent."""
    if not path.is_file():
        return ""
    return f'<img class="{css}" alt="{esc(alt)}" src="{png_data_uri(path.read_bytes())}">'


def array_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def array_img(image: np.ndarray, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="{png_data_uri(array_png(image))}">'


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot state, no display)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_img(fig: Figure, alt: str, dpi: int = 100) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return f'<img class="plot" alt="{esc(alt)}" src="{png_data_uri(buffer.getvalue())}">'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], left_columns: int = 1) -> str:
    """A plain table; cells are escaped, the first ``left_columns`` columns are left-aligned."""

    def cell(tag: str, i: int, value: Any) -> str:
        css = ' class="l"' if i < left_columns else ""
        return f"<{tag}{css}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pct(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * float(value):.{digits}f}%"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"warn" if warn else "note"}">{esc(text)}</p>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: title, a table of contents and the (anchor, title, body HTML) sections."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(section(a, t, b) for a, t, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav>\n{body}\n</body></html>\n'
    )
