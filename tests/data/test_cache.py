"""Decode-once cache: files are decoded once, reused from disk by content, bad files reported not raised."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import bloodcls.data.cache as cache_mod
from bloodcls.data.cache import cache_key, decode_files


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.png"))


def test_memory_mode_decodes_and_reports_bad_files(image_folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = _files(image_folder)[:10] + [str(bad), str(empty)]
    out = decode_files(paths, 32, mode="memory", workers=2)
    assert out.images.shape == (12, 32, 32, 3) and out.images.dtype == np.uint8
    assert set(out.errors) == {10, 11}
    assert "not an image" in out.errors[10] and "empty file" in out.errors[11]
    assert out.ok.tolist() == [True] * 10 + [False, False]
    assert out.images[:10].std() > 0


def test_disk_cache_is_reused_without_decoding(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _files(image_folder)[:20]
    first = decode_files(paths, 24, mode="disk", cache_dir=tmp_path, workers=1)
    assert first.cache_file is not None and first.cache_file.exists()

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite a cache hit")

    monkeypatch.setattr(cache_mod, "decode_image", boom)
    second = decode_files(paths, 24, mode="disk", cache_dir=tmp_path, workers=1)
    assert second.cache_file == first.cache_file
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    # Another resolution is another cache entry.
    assert cache_key(first.hashes, 24) != cache_key(first.hashes, 32)


def test_cache_key_follows_content_not_paths(image_folder: Path, tmp_path: Path) -> None:
    paths = _files(image_folder)[:5]
    copies = []
    for i, p in enumerate(paths):
        target = tmp_path / f"renamed_{i}.png"
        target.write_bytes(Path(p).read_bytes())
        copies.append(str(target))
    a = decode_files(paths, 16, mode="disk", cache_dir=tmp_path / "c")
    b = decode_files(copies, 16, mode="disk", cache_dir=tmp_path / "c")
    assert a.cache_file == b.cache_file


def test_center_crop_is_decoded_from_source_pixels_and_keyed_apart(image_folder: Path, tmp_path: Path) -> None:
    from bloodcls.data.images import read_image, resize_square

    paths = _files(image_folder)[:4]
    whole = decode_files(paths, 16, mode="disk", cache_dir=tmp_path, workers=1)
    cropped = decode_files(paths, 16, mode="disk", cache_dir=tmp_path, workers=1, crop=0.5)
    assert cropped.cache_file != whole.cache_file  # never served the whole-image cache
    for row, path in enumerate(paths):
        source = read_image(path)  # 48 px: the crop is taken from these pixels, not from the 16 px cache
        np.testing.assert_array_equal(np.asarray(cropped.images[row]), resize_square(source, 16, 0.5))
    assert not np.array_equal(np.asarray(cropped.images), np.asarray(whole.images))
    # Caches built before data.center_crop existed keep their key.
    old_key = hashlib.sha256(f"v{cache_mod.CACHE_FORMAT_VERSION}|16|".encode())
    for h in whole.hashes:
        old_key.update(h.encode() + b"\n")
    assert cache_key(whole.hashes, 16) == old_key.hexdigest()[:32] != cache_key(whole.hashes, 16, 0.5)
