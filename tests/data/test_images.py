"""Decoding of the odd files users have: modes, bit depths, corrupt, empty, truncated, oversized."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcls.data.images import BadImageError, decode_image, read_image, resize_square


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _rgb(size: int = 32) -> Image.Image:
    arr = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("CMYK", "JPEG"),
        ("RGB", "BMP"),
        ("RGB", "TIFF"),
        ("L", "JPEG"),
    ],
)
def test_modes_become_rgb_uint8(mode: str, fmt: str) -> None:
    out = decode_image(_encode(_rgb().convert(mode), fmt))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_rgba_transparent_background_is_white() -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out = decode_image(_encode(img, "PNG"))
    assert (out == 255).all()


def test_16bit_grayscale_is_rescaled_not_clipped() -> None:
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    assert out.shape == (8, 8, 3)
    assert 120 <= int(out[0, 0, 0]) <= 135  # half of the 16-bit range -> ~128, not 255


def test_not_an_image_empty_and_truncated_are_bad() -> None:
    with pytest.raises(BadImageError, match="not an image"):
        decode_image(b"Bud1\x00\x00\x00\x01 this is a .DS_Store", ".DS_169665.jpg")
    with pytest.raises(BadImageError, match="empty file"):
        decode_image(b"", "empty.png")
    jpeg = _encode(_rgb(64), "JPEG")
    with pytest.raises(BadImageError, match="cannot decode"):
        decode_image(jpeg[: len(jpeg) // 2], "cut.jpg")


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a huge size (the pixel data is never reached: the size check comes first)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_over_100_megapixels_is_refused_before_decoding() -> None:
    with pytest.raises(BadImageError, match="megapixel limit"):
        decode_image(_png_header_claiming(12_000, 10_000), "huge.png")


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="cannot read"):
        read_image(tmp_path / "nope.png")


def test_jpeg_draft_decoding_matches_full_decode_closely() -> None:
    data = _encode(Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB"), "JPEG")
    fast = resize_square(decode_image(data, draft_size=64), 64)
    slow = resize_square(decode_image(data), 64)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 3


def test_pil_pixel_limit_is_only_lifted_while_bloodcls_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    import bloodcls.data  # noqa: F401 - importing bloodcls must not change PIL for the user's process

    assert Image.MAX_IMAGE_PIXELS is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a user's own, stricter limit
    buf = io.BytesIO()
    Image.new("RGB", (48, 48)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (48, 48, 3)  # 2304 px: ours (100 M) applies, not PIL's
    assert Image.MAX_IMAGE_PIXELS == 100


def test_center_crop_keeps_the_middle_and_resize_square_crops_before_resizing() -> None:
    from bloodcls.data.images import center_crop, draft_size_for

    image = np.zeros((40, 60, 3), np.uint8)
    image[10:30, 15:45] = 200  # the central half of each side
    middle = center_crop(image, 0.5)
    assert middle.shape == (20, 30, 3) and (middle == 200).all()
    assert center_crop(image, 1.0) is image
    with pytest.raises(ValueError):
        center_crop(image, 0.0)
    # Cropped, the bright middle fills the frame; uncropped, the dark border shows after resizing.
    assert (resize_square(image, 16, 0.5) == 200).all()
    assert resize_square(image, 16).min() == 0
    # The JPEG draft must keep enough pixels for the crop: 64 px from the central half needs a 128 px decode.
    assert draft_size_for(64, 0.5) == 128 and draft_size_for(64) == 64 and draft_size_for(64, 0.3) == 214
