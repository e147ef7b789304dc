"""External-lab evaluation: the domain-shift variant builder, class maps, stain / scale transforms, norm layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fit_tiny_run
from PIL import Image

from bloodcls.data import BloodCellDataModule
from bloodcls.data import splits as S
from bloodcls.data.class_map import load_class_map, map_listing
from bloodcls.data.domain_shift import DomainShift, blur, recolour, write_variant, zoom_in, zoom_out
from bloodcls.data.sources import SourceListing
from bloodcls.data.transforms import build_transform
from bloodcls.errors import UserInputError

MODEL = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _disc(size: int = 48, radius: int = 8) -> np.ndarray:
    """A dark purple disc of ``radius`` px on a light background: its extent measures the zoom."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), (240, 225, 230), np.uint8)
    img[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < radius**2] = (90, 40, 120)
    return img


def _extent(img: np.ndarray) -> int:
    return int((img.mean(axis=2) < 160).any(axis=0).sum())  # columns the dark disc covers


# ---------------------------------------------------------------- domain shift functions
def test_zoom_in_and_out_scale_the_cell() -> None:
    img = _disc()
    assert _extent(img) == 16
    assert abs(_extent(zoom_in(img, 2.0)) - 32) <= 2  # the cell fills twice the fraction of the side
    assert abs(_extent(zoom_out(img, 2.0)) - 8) <= 1
    assert abs(_extent(zoom_out(zoom_in(img, 2.0), 2.0)) - 16) <= 2  # zoom_out undoes zoom_in
    padded = zoom_out(img, 2.0)
    assert (padded[0, 0] == img[0, 0]).all()  # padded with the background colour, not black


def test_recolour_and_blur_change_what_they_should() -> None:
    img = _disc()
    assert (recolour(img) == img).mean() > 0.5  # identity settings: (almost) unchanged after the HED round trip
    shifted = recolour(img, h_scale=1.5, e_scale=0.5, hue_shift=20)
    assert np.abs(shifted.astype(int) - img).mean() > 3
    blurred = blur(img, 2.0)
    assert blurred.std() < img.std() and blur(img, 0).tobytes() == img.tobytes()
    with pytest.raises(ValueError):
        zoom_in(img, 0.5)


def test_write_variant_renames_classes_and_shifts_images(tmp_path: Path) -> None:
    files = []
    for name in ("monocyte", "lymphocyte"):
        (tmp_path / "src").mkdir(exist_ok=True)
        path = tmp_path / "src" / f"{name}.png"
        Image.fromarray(_disc()).save(path)
        files.append((str(path), name))
    class_map = write_variant(files, tmp_path / "out", DomainShift(zoom=2.0, blur_sigma=0), size=48)
    assert class_map == {"MONOCYTE": "monocyte", "LYMPHOCYTE": "lymphocyte"}
    written = sorted((tmp_path / "out").rglob("*.png"))
    assert [p.parent.name for p in written] == ["LYMPHOCYTE", "MONOCYTE"]
    assert abs(_extent(np.asarray(Image.open(written[0]))) - 32) <= 3


# ---------------------------------------------------------------- class maps
def _listing() -> SourceListing:
    return SourceListing(["LYMPHO", "MONO", "SMUDGE"], ["a", "b", "c", "d"], np.array([0, 1, 2, 1]))


def test_map_listing_relabels_excludes_and_reports() -> None:
    listing, info = map_listing(_listing(), {"LYMPHO": "lymphocyte", "MONO": "monocyte", "BLAST": None}, MODEL)
    assert listing.class_names == MODEL and listing.ids == ["a", "b", "d"]
    assert listing.labels.tolist() == [2, 3, 3]
    assert info.unmapped == ["SMUDGE"] and info.n_excluded_images == 1 and info.absent_in_data == ["BLAST"]
    assert info.model_classes_without_images == ["basophil", "eosinophil", "neutrophil"]
    assert "present" in info.report()["balanced_acc"]


def test_class_map_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="which the model does not have") as err:
        map_listing(_listing(), {"LYMPHO": "lymfocyte"}, MODEL)
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="none of the external classes"):
        map_listing(_listing(), {"SMUDGE": None, "OTHER": "monocyte"}, MODEL)
    bad = tmp_path / "map.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UserInputError, match="mapping"):
        load_class_map(str(bad))
    with pytest.raises(UserInputError, match="does not exist"):
        load_class_map(str(tmp_path / "missing.yaml"))


def test_datamodule_evaluates_the_whole_external_folder(tmp_path: Path, image_folder: Path) -> None:
    external = tmp_path / "ext"
    files = [(str(p), p.parent.name) for p in sorted(image_folder.rglob("*.png")) if p.parent.name != "basophil"]
    class_map = write_variant(files, external, DomainShift(blur_sigma=0.5))
    dm = BloodCellDataModule(
        root=str(external), image_size=32, num_workers=0, cache="memory", class_map=class_map, model_classes=MODEL
    )
    assert dm.class_names == MODEL
    dm.setup("test")
    assert len(dm.rows_of(S.TEST)) == len(files) and len(dm.rows_of(S.TRAIN)) == 0
    batch = next(iter(dm.test_dataloader()))
    assert set(batch["label"].tolist()) <= {1, 2, 3, 4}
    report = dm.data_report()["class_map"]
    assert report["model_classes_without_images"] == ["basophil"]
    with pytest.raises(UserInputError, match="not for fit"):
        dm.setup("fit")
    with pytest.raises(UserInputError, match="model_classes"):
        BloodCellDataModule(root=str(external), class_map=class_map)


# ---------------------------------------------------------------- transforms and norm layers
def test_stain_normalize_matches_the_reference_lab_statistics(tmp_path: Path) -> None:
    pytest.importorskip("torchstain")
    from skimage.color import rgb2lab

    ref = _disc(64, 20)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    shifted = recolour(ref, h_scale=1.6, e_scale=0.4, hue_shift=25)
    t = build_transform([{"name": "StainNormalize", "reference": str(tmp_path / "ref.png")}], 64)
    out = t(image=shifted)["image"]
    before = np.abs(rgb2lab(shifted).mean(axis=(0, 1)) - rgb2lab(ref).mean(axis=(0, 1))).sum()
    after = np.abs(rgb2lab(out).mean(axis=(0, 1)) - rgb2lab(ref).mean(axis=(0, 1))).sum()
    assert after < 0.5 * before


def test_zoom_transforms_and_robust_preset_build() -> None:
    img = _disc()
    out = build_transform([{"name": "ZoomOut", "factor": 2.0}], 48)(image=img)["image"]
    assert abs(_extent(out) - 8) <= 1
    with pytest.raises(UserInputError, match="factor"):
        build_transform([{"name": "ZoomIn", "factor": 0.5}], 48)
    robust = build_transform("robust", 48)
    outs = [robust(image=img)["image"] for _ in range(8)]
    assert all(o.shape == (48, 48, 3) for o in outs) and len({o.tobytes() for o in outs}) > 1


def test_groupnorm_replaces_every_batchnorm() -> None:
    from bloodcls.models import create_backbone

    net = create_backbone("bloodcls_cnn_tiny", 5, norm_layer="groupnorm")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    net.eval()
    one = net(torch.rand(1, 3, 32, 32))
    assert one.shape == (1, 5)
    with pytest.raises(UserInputError, match="norm_layer"):
        create_backbone("bloodcls_cnn_tiny", 5, norm_layer="batchnrm")


def test_mapping_warnings_name_what_is_left_out() -> None:
    from bloodcls.data.class_map import warn_mapping

    _, info = map_listing(_listing(), {"LYMPHO": "lymphocyte", "MONO": "monocyte"}, MODEL)
    with pytest.warns(UserWarning) as caught:
        warn_mapping(info)
    text = " ".join(str(w.message) for w in caught)
    assert "SMUDGE" in text and "basophil" in text and "balanced accuracy" in text


# ---------------------------------------------------------------- end to end through the CLI
@pytest.mark.slow  # a fit and three test runs
def test_bloodcls_test_with_class_map_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bloodcls.cli import main

    def refused(args: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    best = fit_tiny_run(tmp_path, per_class=12)
    from bloodcls.data.synthetic import write_image_folder

    source = tmp_path / "other_lab_src"
    write_image_folder(source, n_per_class=4, size=32, seed=5)
    files = [(str(p), p.parent.name) for p in sorted(source.rglob("*.png")) if p.parent.name != "basophil"]
    class_map = write_variant(files, tmp_path / "other_lab", DomainShift(zoom=1.5, blur_sigma=0.5))
    (tmp_path / "other_lab" / "SMUDGE").mkdir()
    Image.fromarray(_disc(32)).save(tmp_path / "other_lab" / "SMUDGE" / "s.png")
    map_file = tmp_path / "map.yaml"
    map_file.write_text("".join(f"{k}: {v}\n" for k, v in class_map.items()))
    ext = str(tmp_path / "other_lab")
    base = ["test", "--ckpt_path", str(best), "--data.root", ext, "--trainer.enable_progress_bar", "false"]
    main([*base, "--class_map", str(map_file), "--data.eval_transform", "[{name: ZoomOut, factor: 1.5}]"])
    metrics = json.loads((best.parent.parent / "test_other_lab" / "metrics.json").read_text())
    assert metrics["n"] == len(files)  # the whole external folder, SMUDGE (not in the map) left out
    mapping = metrics["run"]["data"]["class_map"]
    assert mapping["model_classes_without_images"] == ["basophil"] and mapping["excluded_external_classes"] == [
        "SMUDGE"
    ]
    per_class = {c["class"]: c for c in metrics["per_class"]}
    assert per_class["basophil"]["support"] == 0
    present = [c["recall"] for c in metrics["per_class"] if c["support"] > 0]
    assert metrics["balanced_acc"] == pytest.approx(sum(present) / len(present))  # absent classes do not count
    assert not (best.parent.parent / "test" / "metrics.json").exists()  # the run's own test report is not replaced

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("MONOCYTE: monocytes\n")
    assert "monocytes" in refused([*base, "--class_map", str(wrong)])
    none = tmp_path / "none.yaml"
    none.write_text("SMUDGE: null\nBLAST: monocyte\n")
    assert "none of the external classes" in refused([*base, "--class_map", str(none)])
