"""Robust image decoding: any file a user points us at becomes an RGB uint8 array or a clear reason why not."""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS: int = 100_000_000

_pil_limit_lock = threading.Lock()
_pil_limit_users = 0
_pil_limit_saved: int | None = None


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Lift PIL's decompression-bomb check while bloodcls decodes (we enforce ``max_pixels`` with a clear
    message; PIL's check would raise a less helpful error, or only warn, at another threshold). Reference-counted
    across decode threads, and the user's ``Image.MAX_IMAGE_PIXELS`` is back once the last decode ends."""
    global _pil_limit_users, _pil_limit_saved
    with _pil_limit_lock:
        if _pil_limit_users == 0:
            _pil_limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_limit_users += 1
    try:
        yield
    finally:
        with _pil_limit_lock:
            _pil_limit_users -= 1
            if _pil_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_saved


class BadImageError(ValueError):
    """A file that cannot be used as an image; the message says why (shown to the user, file is skipped)."""


def is_image_file(path: str | Path) -> bool:
    """True for names with an image extension; hidden files (``.DS_Store``-style) are still checked later."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to (H, W, 3) uint8."""
    mode = img.mode
    if mode.startswith("I;16") or mode in {"I", "F"}:
        # 16/32-bit single channel: rescale by the type's range, not clip, so a 16-bit scan is not all white.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            peak = 1.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in img.info):
        # Composite on white: a transparent background should look like an empty slide, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return arr


def decode_image(
    data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> np.ndarray:
    """Decode encoded image bytes to an RGB (H, W, 3) uint8 array.

    ``draft_size`` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 in the DCT domain while staying at least that
    large, which makes decoding for a small training resolution several times faster.
    Raises ``BadImageError`` naming ``name`` for empty files, non-images, truncated files and images over
    ``max_pixels`` pixels.
    """
    if len(data) == 0:
        raise BadImageError(f"{name}: empty file")
    try:
        with _own_pixel_limit(), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"{name}: {width}x{height} = {width * height / 1e6:.0f} megapixels is over the "
                    f"{max_pixels / 1e6:.0f}-megapixel limit"
                )
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()  # forces the full decode so truncation is detected here, not in a worker
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{name}: cannot decode image ({err})") from None
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # multi-page TIFF: the first page is the image
    return _to_rgb_array(img)


def read_bytes(path: str | Path) -> bytes:
    """Read a file, turning OS errors into ``BadImageError`` naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise BadImageError(f"{path}: cannot read file ({err.strerror})") from None


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file to RGB (H, W, 3) uint8 (see ``decode_image``)."""
    return decode_image(read_bytes(path), str(path), max_pixels)


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of each side of an (H, W, ...) image (a view; ``fraction`` 1 keeps it whole)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"center_crop fraction {fraction} must be in (0, 1]")
    if fraction == 1:
        return image
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


def draft_size_for(size: int, crop: float = 1.0) -> int:
    """The side the JPEG decoder must keep so that the central ``crop`` of the image still has ``size`` pixels."""
    return math.ceil(size / crop)


def resize_square(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """Resize (H, W, 3) uint8 to (size, size, 3) with area averaging when shrinking (what the cache stores), after
    keeping the central ``crop`` of each side (``data.center_crop``: the cell at source resolution, not upsampled)."""
    import cv2

    image = center_crop(image, crop)
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    shrinking = image.shape[0] > size or image.shape[1] > size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)
