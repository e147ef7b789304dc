"""File names that are not valid UTF-8 (``caf\\xe9.png`` saved by a Latin-1 system) through the data files a run
writes, and through ``bloodcls fit`` / ``test`` / ``predict`` / ``export``; a predict folder with no readable image;
images put directly in the root."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from bloodcls.data import BloodCellDataModule
from bloodcls.data import split_plan as P
from bloodcls.data.loading import DecodeSettings, load_folder
from bloodcls.errors import UserInputError

LATIN1 = b"caf\xe9.png"  # "café.png" in Latin-1: not valid UTF-8
SHOWN = "caf\\xe9.png"  # how every bloodcls output file writes it (bloodcls.io.path_text)


def _add_latin1_copy(folder: Path, source: Path) -> None:
    """A copy of ``source`` named with raw, non-UTF-8 bytes (as a USB stick from a Latin-1 system has them)."""
    with open(os.path.join(os.fsencode(folder), LATIN1), "wb") as fh:
        fh.write(source.read_bytes())


@pytest.fixture
def folder(tmp_path: Path, image_folder: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    # A distinct image (flipped), so it is not dropped as a duplicate and lands in some subset.
    from PIL import Image

    src = sorted((root / "monocyte").glob("*.png"))[0]
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "flipped.png")
    _add_latin1_copy(root / "monocyte", root / "flipped.png")
    (root / "flipped.png").unlink()
    return root


def _utf8_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_bytes().decode("utf-8").splitlines()))  # strict UTF-8


def test_split_files_of_a_folder_with_a_latin1_name(folder: Path, tmp_path: Path) -> None:
    dm = BloodCellDataModule(root=str(folder), image_size=32, num_workers=0, cache="memory")
    dm.setup("fit")
    split_csv = dm.write_split(tmp_path / "run")
    rows = _utf8_csv(split_csv)
    latin = [r for r in rows if r["path"].endswith(SHOWN)]
    assert len(latin) == 1 and latin[0]["path"] == f"{folder}/monocyte/{SHOWN}" and latin[0]["label"] == "monocyte"
    report = json.loads((tmp_path / "run" / "data_report.json").read_bytes().decode("utf-8"))
    assert report["n_listed"] == len(rows) == 121 and report["skipped"] == []

    # split.csv is matched back by content hash: the escaped path loses nothing.
    again = BloodCellDataModule(
        root=str(folder), image_size=32, num_workers=0, cache="memory", split_file=str(split_csv)
    )
    assert list(again.subsets) == list(dm.subsets)
    assert list(P.SavedSplit.from_csv(split_csv).subsets) == [r["subset"] for r in rows]


def test_predict_folder_without_a_readable_image_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"^data.predict_root: none of the 2 image files under .* could be read"):
        load_folder(str(tmp_path), DecodeSettings(32, cache="memory"), "data.predict_root", "predictions_skipped.csv")


def test_images_directly_in_the_root_say_so_before_the_class_count_is_used(tmp_path: Path, image_folder: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted((image_folder / "basophil").glob("*.png"))[:3]:
        shutil.copy(p, flat / p.name)
    dm = BloodCellDataModule(root=str(flat), image_size=32, num_workers=0, cache="memory")
    # The CLI links data.num_classes to the model before anything is decoded: it must not read as 0 classes.
    with pytest.raises(UserInputError, match=r"no class folders \(found 3 images directly in it\)"):
        _ = dm.num_classes


# --- through the commands -----------------------------------------------------------------------------------


def _one_error_line(stderr: str, prog: str) -> str:
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"bloodcls {prog}: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def _run(args: list[str]) -> None:
    """``bloodcls ARGS`` in this process (the console script's route is tested in tests/cli)."""
    from bloodcls.entry import main

    main(args)


@pytest.mark.slow  # a fit, a test, two predicts and an ONNX export with its parity check
def test_fit_test_predict_export_with_a_latin1_file_name(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _run(
        [
            "fit",
            "--config",
            str(REPO / "configs/quickstart.yaml"),
            "--data.source",
            "bloodcls.data.FolderSource",
            "--data.source.root",
            str(folder),
            "--data.image_size",
            "32",
            "--data.test_fraction",
            "0.3",
            "--data.num_workers",
            "0",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    run = tmp_path / "runs" / "quickstart" / "version_0"
    best = run / "checkpoints" / "best.ckpt"
    split = _utf8_csv(run / "split.csv")
    assert [r["path"] for r in split if r["path"].endswith(SHOWN)] == [f"{folder}/monocyte/{SHOWN}"]
    json.loads((run / "data_report.json").read_bytes().decode("utf-8"))
    assert _utf8_csv(run / "metrics.csv")  # the atomic CSVLogger of the quickstart config

    _run(["test", "--ckpt_path", str(best), "--trainer.enable_progress_bar", "false"])
    tested = {r["path"] for r in _utf8_csv(run / "test" / "test_predictions.csv")}
    assert tested == {r["path"] for r in split if r["subset"] == "test"}
    json.loads((run / "test" / "metrics.json").read_bytes().decode("utf-8"))

    to_classify = tmp_path / "to_classify"
    to_classify.mkdir()
    _add_latin1_copy(to_classify, next((folder / "eosinophil").glob("*.png")))
    os.close(os.open(os.path.join(os.fsencode(to_classify), b"bad\xff.jpg"), os.O_CREAT | os.O_WRONLY))  # empty
    _run(["predict", "--ckpt_path", str(best), "--data.predict_root", str(to_classify)])
    predictions = run / "predict" / "predictions.csv"
    assert [r["path"] for r in _utf8_csv(predictions)] == [f"{to_classify}/{SHOWN}"]
    skipped = _utf8_csv(predictions.with_name("predictions_skipped.csv"))
    assert [r["path"] for r in skipped] == [f"{to_classify}/bad\\xff.jpg"]

    # A folder with nothing readable: one line, non-zero exit, and no earlier predictions left looking current.
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "x.png").write_bytes(b"garbage")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _run(["predict", "--ckpt_path", str(best), "--data.predict_root", str(unreadable)])
    assert exc.value.code == 2
    assert "none of the 1 image files under" in _one_error_line(capsys.readouterr().err, "predict")
    assert not predictions.exists() and not predictions.with_name("predictions_skipped.csv").exists()

    _run(["export", "--ckpt_path", str(best), "--check"])
