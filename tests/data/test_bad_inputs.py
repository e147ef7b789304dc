"""Every bad input named in the foundation issue: a clear error naming the key/file, or skip-and-count."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcls.data import BloodCellDataModule, SyntheticSource
from bloodcls.errors import UserInputError


def _dm(root: Path | str | None, **kwargs: object) -> BloodCellDataModule:
    defaults: dict[str, object] = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache": "memory"}
    return BloodCellDataModule(root=None if root is None else str(root), **{**defaults, **kwargs})  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path, image_folder: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    return root


def _png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_bad_files_are_skipped_counted_and_odd_modes_converted(folder: Path) -> None:
    neut = folder / "neutrophil"
    (neut / ".DS_169665.jpg").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)  # the real PBC quirk
    (neut / "empty.jpg").write_bytes(b"")
    jpeg = _png_bytes(Image.new("RGB", (48, 48), (200, 100, 100)), "JPEG")
    (neut / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    (neut / "gray.png").write_bytes(_png_bytes(rgb.convert("L")))
    (neut / "rgba.png").write_bytes(_png_bytes(rgb.convert("RGBA")))
    (neut / "cmyk.jpg").write_bytes(_png_bytes(rgb.convert("CMYK"), "JPEG"))
    (neut / "deep.png").write_bytes(
        _png_bytes(Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20))
    )
    (neut / "huge.png").write_bytes(_png_bytes(Image.new("RGB", (64, 64))))
    dm = _dm(folder, max_image_pixels=64 * 64 - 1)  # the same guard as the 100-megapixel default, scaled down
    dm.setup("fit")
    report = dm.data_report()
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {".DS_169665.jpg", "empty.jpg", "truncated.jpg", "huge.png"}
    assert "not an image" in skipped[".DS_169665.jpg"] and "empty" in skipped["empty.jpg"]
    assert "megapixel" in skipped["huge.png"]
    ids = dm.data.listing.ids
    for name in ("gray.png", "rgba.png", "cmyk.jpg", "deep.png"):
        row = next(i for i, p in enumerate(ids) if p.endswith(name))
        assert dm.data.usable[row] and dm.data.images[row].shape == (32, 32, 3)


def test_empty_class_folder(folder: Path) -> None:
    (folder / "platelet").mkdir()
    with pytest.raises(UserInputError, match=r"class folder .*platelet contains no images"):
        _dm(folder).setup("fit")


def test_one_class_dataset(tmp_path: Path, image_folder: Path) -> None:
    shutil.copytree(image_folder / "monocyte", tmp_path / "only" / "monocyte")
    with pytest.raises(UserInputError, match="found 1 class .*need at least 2"):
        _dm(tmp_path / "only").setup("fit")


def test_class_with_fewer_images_than_folds(folder: Path) -> None:
    for p in sorted((folder / "basophil").glob("*.png"))[3:]:
        p.unlink()
    with pytest.raises(UserInputError, match="class 'basophil' has 3 images, fewer than n_folds=5"):
        _dm(folder, n_folds=5).setup("fit")


def test_labels_per_class_larger_than_class(folder: Path) -> None:
    with pytest.raises(UserInputError, match="labels_per_class=50 is larger than class 'basophil'"):
        _dm(folder, labels_per_class=50).setup("fit")


def test_split_fractions_past_one() -> None:
    with pytest.raises(UserInputError, match="val_fraction \\+ test_fraction = 1.1 must be < 1"):
        _dm(None, val_fraction=0.6, test_fraction=0.5)


def test_root_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"data.root: .*nowhere does not exist"):
        _dm(tmp_path / "nowhere").setup("fit")


def test_root_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(_png_bytes(Image.new("RGB", (8, 8))))
    with pytest.raises(UserInputError, match="no class folders \\(found 1 images directly in it\\)"):
        _dm(tmp_path / "flat").setup("fit")


def test_all_images_of_a_class_unusable(folder: Path) -> None:
    for p in (folder / "basophil").glob("*.png"):
        p.write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="basophil have no usable images"):
        _dm(folder).setup("fit")


def test_unknown_backbone_name() -> None:
    from bloodcls.models import create_backbone

    with pytest.raises(UserInputError, match="unknown backbone 'resnet181'; did you mean"):
        create_backbone("resnet181", 5)


def test_zero_val_fraction_refused_for_fit() -> None:
    with pytest.raises(UserInputError, match="no validation images"):
        _dm(None, source=SyntheticSource(5), val_fraction=0.0).setup("fit")
