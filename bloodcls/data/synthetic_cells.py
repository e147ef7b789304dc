"""Drawing one synthetic blood-smear crop of a white-cell subtype (the embedded dataset's renderer).

Each image is a cell-centred crop in the style of a CellaVision export: a pale smear background with red blood
cells, and one leukocyte whose morphology follows the textbook description of its class. Rendering happens
directly at the requested size on numpy meshgrids in optical-density space (``rgb = 255 * exp(-OD)``), which is
how stained, translucent structures combine under bright-field light: overlapping red cells get darker and a
per-image stain jitter is a simple scaling of densities.

All lengths below are in *base pixels*, i.e. pixels of a 64 px crop (about 2 px per micrometre); they are
multiplied by ``size / 64`` so the same cell looks the same at 32 px and at 256 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from bloodcls.data import synthetic_geometry as G

SYNTHETIC_CLASSES: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")

_BASE = 64.0  # reference crop size the base-pixel lengths are expressed in
_MIN_SIZE = 16  # below this the nucleus shapes are no longer resolvable

# Cell radius ranges in base pixels. Real diameters: lymphocyte 7-10 um, basophil 10-14 um, neutrophil 12-15 um,
# eosinophil 12-17 um, monocyte 15-20 um; the ranges overlap on purpose so size alone does not give the class.
_RADIUS: dict[str, tuple[float, float]] = {
    "basophil": (10.5, 13.5),
    "eosinophil": (12.0, 15.0),
    "lymphocyte": (8.5, 11.0),
    "monocyte": (14.5, 18.5),
    "neutrophil": (11.5, 14.5),
}


def _od(r: float, g: float, b: float) -> np.ndarray:
    """Optical density of an RGB colour seen on white light: the additive quantity stains contribute."""
    return -np.log(np.array([r, g, b], dtype=np.float32) / 255.0)


# May-Grünwald-Giemsa-like colours (RGB) of every structure, as optical densities.
_PLASMA = _od(238, 228, 226)
_RBC_RIM = _od(214, 148, 158)
_RBC_PALLOR = _od(232, 192, 196)
_PLATELET = _od(150, 105, 170)
_NEU_CYTO = _od(228, 206, 222)
_NEU_GRAN = _od(196, 150, 196)
_NEU_NUC = _od(92, 44, 120)
_EOS_CYTO = _od(236, 206, 194)
_EOS_GRAN = _od(222, 100, 72)
_EOS_NUC = _od(104, 52, 124)
_BASO_CYTO = _od(196, 168, 206)
_BASO_GRAN = _od(48, 24, 84)
_BASO_NUC = _od(112, 66, 146)
_LYM_CYTO = _od(160, 194, 232)
_LYM_NUC = _od(78, 40, 112)
_MONO_CYTO = _od(184, 190, 214)
_MONO_NUC = _od(132, 94, 168)
_MONO_VACUOLE = _od(236, 232, 242)


@dataclass
class _Cell:
    """The white cell: geometry in its own rotated frame, restricted to the window `win` of the image.

    All arrays are (h, w) float32 over that window, lengths in base pixels.
    """

    win: tuple[slice, slice]  # (rows, cols) of the image the cell can touch
    x: np.ndarray  # coordinate along the cell's rotated x axis
    y: np.ndarray
    radius: float
    alpha: np.ndarray  # coverage of the cell body (cytoplasm + nucleus), anti-aliased
    aa: float  # one output pixel in base pixels: the width of an anti-aliased edge
    centre_px: tuple[float, float]  # (cx, cy) in window pixels
    scale: float  # output pixels per base pixel
    size: int  # full image size, for noise whose feature size is relative to the crop


def _granules(rng: np.random.Generator, cell: _Cell, count: int, granule_radius: float, extent: float) -> np.ndarray:
    """Coverage (h, w) of `count` round granules scattered uniformly over a disc of `extent` x cell radius.

    Points are splatted bilinearly and blurred once, which is far cheaper than drawing each granule and keeps
    sub-pixel positions, so granules stay distinct between images even at 32 px.
    """
    h, w = cell.alpha.shape
    rho = cell.radius * extent * np.sqrt(rng.uniform(0.0, 1.0, count))
    phi = rng.uniform(0.0, 2.0 * np.pi, count)
    px = cell.centre_px[0] + rho * np.cos(phi) * cell.scale - 0.5  # -0.5: pixel centres sit at +0.5
    py = cell.centre_px[1] + rho * np.sin(phi) * cell.scale - 0.5
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = (px - x0).astype(np.float32), (py - y0).astype(np.float32)
    acc = np.zeros((h, w), dtype=np.float32)
    for ox, oy, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + ox, y0 + oy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        np.add.at(acc, (yi[ok], xi[ok]), wt[ok])
    sigma = max(0.45, 0.7 * granule_radius * cell.scale)
    acc = np.asarray(cv2.GaussianBlur(acc, (0, 0), sigma), dtype=np.float32)
    # Peak of a unit-mass Gaussian is 1 / (2 pi sigma^2): rescale so an isolated granule reaches ~1 at its centre.
    return np.clip(acc * (2.0 * np.pi * sigma * sigma * 1.4) - 0.15, 0.0, 1.0)


def _over(od: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint a layer in place: lerp the optical density towards `colour` by coverage alpha (h, w)."""
    od += alpha[..., None] * (colour - od)


def _draw_background(rng: np.random.Generator, size: int, scale: float, aa: float) -> np.ndarray:
    """Plasma background with a few overlapping, partly cut red blood cells; returns OD (S, S, 3)."""
    ys, xs = G.grid(size)
    # Three scalar density maps (plasma, red-cell disc, red-cell pale centre) coloured by one small matmul at
    # the end: far fewer 3-channel operations than colouring each red cell on its own.
    maps = np.zeros((size, size, 3), dtype=np.float32)
    maps[..., 0] = G.u(rng, 0.7, 1.4) * (1.0 + 0.18 * G.smooth_noise(rng, size, 5))
    disc, centre = maps[..., 1], maps[..., 2]
    for _ in range(int(rng.integers(3, 10))):
        # Centres may fall outside the frame so some red cells are cut by the border, as in real crops.
        cx, cy = (rng.uniform(-0.1, 1.1, 2) * size).tolist()
        r, squash, angle, density = rng.uniform((6.5, 0.85, 0.0, 0.8), (8.5, 1.0, np.pi, 1.0)).tolist()
        win = (G.window(cy, (r + 2) * scale, size), G.window(cx, (r + 2) * scale, size))
        x, y = xs[win] * (1.0 / scale), ys[win] * (1.0 / scale)
        a = G.ellipse(x, y, cx / scale, cy / scale, r, r * squash, angle, aa) * density
        d = np.hypot(x - cx / scale, y - cy / scale) * (1.0 / r)  # 0 at the centre, 1 at the rim
        # Additive densities: where two red cells overlap the smear is thicker and looks darker.
        disc[win] += a
        centre[win] += a * np.clip((0.6 - d) * (1.0 / 0.35), 0.0, 1.0)  # paler zone of a biconcave disc
    rim = _RBC_RIM * G.u(rng, 0.85, 1.15)
    pallor = _RBC_PALLOR * G.u(rng, 0.85, 1.15)
    od = maps @ np.stack([_PLASMA, rim, pallor - rim])  # (S, S, 3)
    for _ in range(int(rng.binomial(2, 0.3))):  # the odd platelet: a small purple dot that is not the cell of interest
        cx, cy = (rng.uniform(0.0, 1.0, 2) * size).tolist()
        a_ax, b_ax, angle = rng.uniform((1.0, 0.8, 0.0), (1.8, 1.4, np.pi)).tolist()
        win = (G.window(cy, (a_ax + 2) * scale, size), G.window(cx, (a_ax + 2) * scale, size))
        a = G.ellipse(xs[win] / scale, ys[win] / scale, cx / scale, cy / scale, a_ax, b_ax, angle, aa)
        od[win] += a[..., None] * _PLATELET
    return od


def _make_cell(rng: np.random.Generator, size: int, label: int, scale: float, aa: float) -> _Cell:
    """Sample the white cell's position, rotation, radius and slightly irregular outline."""
    ys, xs = G.grid(size)
    lo, hi = _RADIUS[SYNTHETIC_CLASSES[label]]
    radius = G.u(rng, lo, hi)
    # Keep the cell well inside the crop (CellaVision centres it) but not on the exact same pixel every time.
    cx, cy = (size / 2.0 + rng.uniform(-3.0, 3.0, 2) * scale).tolist()
    theta = G.u(rng, 0.0, 2.0 * np.pi)
    a2, a3, p2, p3 = rng.uniform((0.0, 0.0, 0.0, 0.0), (0.05, 0.05, 2 * np.pi, 2 * np.pi)).tolist()
    reach = (radius * (1.0 + a2 + a3) + 1.5) * scale
    win = (G.window(cy, reach, size), G.window(cx, reach, size))
    c, s = float(np.cos(theta)), float(np.sin(theta))
    x0, y0 = (xs[win] - cx) * (1.0 / scale), (ys[win] - cy) * (1.0 / scale)
    x, y = c * x0 + s * y0, c * y0 - s * x0
    ang = np.arctan2(y, x)
    outline = radius * (1.0 + a2 * np.cos(2 * ang + p2) + a3 * np.cos(3 * ang + p3))
    alpha = G.coverage(outline - np.hypot(x, y), aa)
    centre_px = (cx - win[1].start, cy - win[0].start)
    return _Cell(win, x, y, radius, alpha, aa, centre_px, scale, size)


def _textured(rng: np.random.Generator, cell: _Cell, colour: np.ndarray, contrast: float, cells: int) -> np.ndarray:
    """A stain colour with a per-image density jitter and a smooth mottling texture, (h, w, 3) OD."""
    noise = G.smooth_noise(rng, cell.size, cells)[cell.win]
    texture = np.clip(1.0 + contrast * noise, 0.4, 1.8)
    return colour * G.u(rng, 0.85, 1.15) * texture[..., None]


def _neutrophil(od: np.ndarray, rng: np.random.Generator, cell: _Cell) -> None:
    """3-5 dark lobes along a curved path joined by thin strands; pale lilac cytoplasm with fine granules."""
    R, aa = cell.radius, cell.aa
    _over(od, cell.alpha, _textured(rng, cell, _NEU_CYTO, 0.12, 8))
    fine = _granules(rng, cell, int(R * R * 0.9), 0.5, 0.92)
    _over(od, fine * cell.alpha * 0.35, _NEU_GRAN)
    k = int(rng.integers(3, 6))
    arc = G.u(rng, 0.45, 0.6) * R
    span = G.u(rng, 2.4, 3.8)  # radians covered by the lobe chain: from a C to nearly a ring
    phis = -span / 2 + span * np.arange(k) / (k - 1) + rng.uniform(-0.15, 0.15, k)
    cxs = arc * np.cos(phis) + rng.uniform(-0.07, 0.07, k) * R
    cys = arc * np.sin(phis) + rng.uniform(-0.07, 0.07, k) * R
    cxs -= cxs.mean()  # centre the chain in the cell
    cxs_l, cys_l = cxs.tolist(), cys.tolist()
    lobe_r = R * (0.36 - 0.025 * k)
    nuc = np.zeros_like(cell.alpha)
    for j in range(k):
        a, b, tilt = rng.uniform((0.95, 0.75, -0.3), (1.25, 0.95, 0.3)).tolist()
        lobe = G.ellipse(
            cell.x, cell.y, cxs_l[j], cys_l[j], lobe_r * a, lobe_r * b, float(phis[j]) + np.pi / 2 + tilt, aa
        )
        np.maximum(nuc, lobe, out=nuc)
    for j in range(k - 1):
        p, q = (cxs_l[j], cys_l[j]), (cxs_l[j + 1], cys_l[j + 1])
        np.maximum(nuc, G.segment(cell.x, cell.y, p, q, G.u(rng, 0.35, 0.7), aa), out=nuc)
    _over(od, nuc * cell.alpha, _textured(rng, cell, _NEU_NUC, 0.18, 14))


def _eosinophil(od: np.ndarray, rng: np.random.Generator, cell: _Cell) -> None:
    """Bilobed ("spectacle") nucleus; abundant orange-red granules packing the cytoplasm."""
    R, aa = cell.radius, cell.aa
    _over(od, cell.alpha, _textured(rng, cell, _EOS_CYTO, 0.12, 8))
    sep = G.u(rng, 0.32, 0.45) * R
    bend = G.u(rng, -0.2, 0.25) * R
    lobes = ((-sep, bend), (sep, bend + G.u(rng, -0.1, 0.1) * R))
    nuc = np.zeros_like(cell.alpha)
    for lx, ly in lobes:
        a, b, angle = rng.uniform((0.27, 0.22, 1.2), (0.34, 0.28, 1.9)).tolist()
        np.maximum(nuc, G.ellipse(cell.x, cell.y, lx, ly, R * a, R * b, angle, aa), out=nuc)
    np.maximum(nuc, G.segment(cell.x, cell.y, lobes[0], lobes[1], G.u(rng, 0.5, 1.5), aa), out=nuc)
    _over(od, nuc * cell.alpha, _textured(rng, cell, _EOS_NUC, 0.15, 14))
    # Granules lie in the cytoplasm and only thinly over the nucleus, so the two lobes stay visible.
    gran = _granules(rng, cell, int(R * R * G.u(rng, 0.9, 1.3)), 1.05, 0.95)
    _over(od, gran * cell.alpha * (1.0 - 0.75 * nuc) * 0.85, _EOS_GRAN * G.u(rng, 0.85, 1.15))


def _basophil(od: np.ndarray, rng: np.random.Generator, cell: _Cell) -> None:
    """Lilac cytoplasm and a pale lobulated nucleus almost hidden under coarse blue-black granules."""
    R, aa = cell.radius, cell.aa
    _over(od, cell.alpha, _textured(rng, cell, _BASO_CYTO, 0.12, 8))
    nuc = np.zeros_like(cell.alpha)
    for _ in range(int(rng.integers(2, 4))):
        nx, ny, a, b, angle = rng.uniform((-0.25, -0.25, 0.35, 0.28, 0.0), (0.25, 0.25, 0.5, 0.4, np.pi)).tolist()
        np.maximum(nuc, G.ellipse(cell.x, cell.y, nx * R, ny * R, R * a, R * b, angle, aa), out=nuc)
    _over(od, nuc * cell.alpha, _textured(rng, cell, _BASO_NUC, 0.15, 14))
    # Coarse granules over the whole cell, denser over the nucleus, which is why it is hard to see.
    gran = _granules(rng, cell, int(R * R * G.u(rng, 0.3, 0.45)), G.u(rng, 1.2, 1.6), 0.9)
    gran_nuc = _granules(rng, cell, int(R * R * 0.2), 1.3, 0.55)
    cover = np.maximum(gran, gran_nuc * nuc)
    _over(od, cover * cell.alpha * 0.95, _BASO_GRAN * G.u(rng, 0.8, 1.1))


def _lymphocyte(od: np.ndarray, rng: np.random.Generator, cell: _Cell) -> None:
    """Small cell: a large round dense nucleus filling most of it, a thin rim of sky-blue cytoplasm."""
    R, aa = cell.radius, cell.aa
    _over(od, cell.alpha, _textured(rng, cell, _LYM_CYTO, 0.12, 8))
    nr = R * G.u(rng, 0.74, 0.86)
    off = G.u(rng, 0.0, R - nr - 0.3)  # eccentric nucleus, rim thicker on one side
    nuc = G.ellipse(cell.x, cell.y, off, 0.0, nr, nr * G.u(rng, 0.9, 1.0), G.u(rng, 0.0, np.pi), aa)
    if rng.uniform() < 0.3:  # a shallow nuclear indentation (cleft) in some cells
        nuc *= 1.0 - G.ellipse(cell.x, cell.y, off + nr * 1.05, 0.0, nr * 0.35, nr * 0.25, 0.0, aa)
    _over(od, nuc * cell.alpha, _textured(rng, cell, _LYM_NUC, 0.22, 14))


def _monocyte(od: np.ndarray, rng: np.random.Generator, cell: _Cell) -> None:
    """Largest cell: kidney/horseshoe nucleus with lacy, lighter chromatin; grey-blue cytoplasm, some vacuoles."""
    R, aa = cell.radius, cell.aa
    _over(od, cell.alpha, _textured(rng, cell, _MONO_CYTO, 0.12, 8))
    ox = G.u(rng, -0.1, 0.1) * R
    a, b = R * G.u(rng, 0.62, 0.74), R * G.u(rng, 0.48, 0.58)
    body = G.ellipse(cell.x, cell.y, ox, 0.0, a, b, 0.0, aa)
    # The indentation: an ellipse bitten out of one long side; deeper bites turn the kidney into a horseshoe.
    depth = G.u(rng, 0.3, 0.75)
    notch = G.ellipse(cell.x, cell.y, ox, b * (1.45 - depth), a * G.u(rng, 0.3, 0.5), b * 0.6, 0.0, aa)
    nuc = body * (1.0 - notch)
    _over(od, nuc * cell.alpha, _textured(rng, cell, _MONO_NUC, 0.3, 16))
    n_vac = int(rng.integers(0, 5))
    if n_vac:
        vac = np.zeros_like(cell.alpha)
        for _ in range(n_vac):
            rho, phi, r = rng.uniform((0.62, 0.0, 0.7), (0.85, 2 * np.pi, 1.5)).tolist()
            vx, vy = R * rho * np.cos(phi), R * rho * np.sin(phi)
            np.maximum(vac, G.ellipse(cell.x, cell.y, vx, vy, r, r, 0.0, aa), out=vac)
        _over(od, vac * cell.alpha * 0.7, _MONO_VACUOLE)


_PAINTERS = (_basophil, _eosinophil, _lymphocyte, _monocyte, _neutrophil)  # same order as SYNTHETIC_CLASSES


def _stain_and_capture(rng: np.random.Generator, od: np.ndarray, scale: float) -> np.ndarray:
    """Apply per-image stain/illumination jitter, optics blur and sensor noise; OD (S, S, 3) -> RGB uint8."""
    # Stain jitter: overall staining intensity, per-channel gains and a small channel mixing (a hue shift).
    mix = np.eye(3, dtype=np.float32) + rng.normal(0.0, 0.035, (3, 3)).astype(np.float32)
    mix *= (G.u(rng, 0.8, 1.2) * rng.normal(1.0, 0.06, 3)).astype(np.float32)[:, None]
    od = od @ mix.T
    illum = (255.0 * G.u(rng, 0.92, 1.04) * rng.normal(1.0, 0.015, 3)).astype(np.float32)
    rgb = np.exp(-od) * illum
    # Focus blur grows slower than the crop: a 256 px crop is a sharper photo, not a 64 px one upscaled.
    rgb = cv2.GaussianBlur(rgb, (0, 0), max(0.3, G.u(rng, 0.3, 0.8) * math.sqrt(scale)))
    # Uniform sensor noise of the same standard deviation: the shape does not matter, and it is 5x cheaper
    # to draw than Gaussian float32 noise.
    rgb += (rng.random(rgb.shape, dtype=np.float32) - 0.5) * (G.u(rng, 1.5, 5.0) * math.sqrt(12.0))
    return np.clip(rgb + 0.5, 0.0, 255.0).astype(np.uint8)


def check_size(size: int) -> None:
    """Refuse sizes the nucleus shapes cannot be drawn at."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < _MIN_SIZE:
        raise ValueError(f"synthetic: size must be an int >= {_MIN_SIZE} pixels, got {size!r}")


def render_cell(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Render one synthetic smear crop of class `label` (index into SYNTHETIC_CLASSES); (size, size, 3) uint8."""
    if not 0 <= int(label) < len(SYNTHETIC_CLASSES):
        raise ValueError(f"synthetic: label must be in [0, {len(SYNTHETIC_CLASSES)}), got {label!r}")
    check_size(size)
    size, label = int(size), int(label)
    scale = size / _BASE
    aa = 1.0 / scale  # one output pixel, in base pixels
    od = _draw_background(rng, size, scale, aa)  # (S, S, 3)
    cell = _make_cell(rng, size, label, scale, aa)
    view = od[cell.win]  # painters work in place on the cell's window only
    # The white cell pushes red cells aside: its body starts from plain plasma, not from what lay beneath.
    _over(view, cell.alpha, _PLASMA)
    _PAINTERS[label](view, rng, cell)
    return _stain_and_capture(rng, od, scale)
