"""bloodcls explain: overlays and explain.csv for a 1-epoch run's test split and for a folder; one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import fit_tiny_run
from PIL import Image

pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")

from bloodcls.commands.explain import main as explain_main  # noqa: E402
from bloodcls.data.synthetic import write_image_folder  # noqa: E402


def _fit(root: Path, backbone: str) -> Path:
    """A 1-epoch synthetic run at 32 px, 8 images per class; returns its best checkpoint."""
    return fit_tiny_run(root, backbone, per_class=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fit(tmp_path_factory.mktemp("explain_run"), "bloodcls_cnn_tiny")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _test_split(ckpt: Path) -> list[dict[str, str]]:
    return [r for r in _rows(ckpt.parent.parent / "split.csv") if r["subset"] == "test"]


def test_explains_the_runs_test_split_by_default(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    explain_main(["--ckpt_path", str(tiny_run)])
    out = tiny_run.parent.parent / "explain" / "gradcam"
    rows = _rows(out / "explain.csv")
    test = _test_split(tiny_run)
    assert sorted(r["file"] for r in rows) == sorted(r["path"] for r in test)
    truth = {r["path"]: r["label"] for r in test}
    for row in rows:
        assert row["target"] == row["predicted"] and row["true"] == truth[row["file"]]
        assert 0.0 < float(row["confidence"]) <= 1.0
        with Image.open(out / row["overlay"]) as png:
            assert png.format == "PNG" and png.size[0] == 2 * png.size[1] and png.size[1] >= 224
    assert len(list(out.glob("*.png"))) == len(rows)
    assert f"{len(rows)} gradcam overlays" in capsys.readouterr().out


def test_true_target_on_the_test_split(tiny_run: Path, tmp_path: Path) -> None:
    explain_main(["--ckpt_path", str(tiny_run), "--target", "true", "--output", str(tmp_path), "--limit", "3"])
    rows = _rows(tmp_path / "explain.csv")
    assert len(rows) == 3 and all(r["target"] == r["true"] for r in rows)


@pytest.mark.parametrize("method", ["gradcam++", "eigencam", "scorecam"])
def test_a_folder_of_images_with_a_named_target_class(tiny_run: Path, tmp_path: Path, method: str) -> None:
    images = tmp_path / "external"
    write_image_folder(images, n_per_class=1, size=48, seed=7)  # other size than the run's: resized at 32 px
    out = tmp_path / "out"
    explain_main(
        ["--ckpt_path", str(tiny_run), "--images", str(images), "--method", method, "--target", "monocyte"]
        + ["--output", str(out), "--batch_size", "2"]
    )
    rows = _rows(out / "explain.csv")
    assert len(rows) == len(list(images.rglob("*.png"))) == 5
    assert all(r["target"] == "monocyte" and r["true"] == "" and Path(r["file"]).is_file() for r in rows)
    assert len({r["overlay"] for r in rows}) == 5 and all((out / r["overlay"]).is_file() for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "platelet"], "--target platelet: not a class of this model"),
        (["--target", "true", "--images", "IMAGES"], "--target true needs true labels"),
        (["--images", "/nonexistent/folder"], "--images /nonexistent/folder: no such file or folder"),
        (
            ["--method", "layercam"],
            "--method layercam: unknown (expected one of: gradcam, gradcam++, eigencam, scorecam)",
        ),
        (["--batch_size", "0"], "--batch_size 0: expected at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [str(tmp_path) if a == "IMAGES" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        explain_main(["--ckpt_path", str(tiny_run), "--output", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("bloodcls explain: error:") and "\n" not in err


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        explain_main(["--ckpt_path", str(tmp_path / "none.ckpt")])
    assert exit_info.value.code == 2 and "\n" not in capsys.readouterr().err.strip()


def test_a_network_without_a_convolutional_trunk_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _fit(tmp_path, "bloodcls_rnn")
    with pytest.raises(SystemExit) as exit_info:
        explain_main(["--ckpt_path", str(ckpt)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert "RecurrentClassifier has no convolutional layer" in err
    assert not (ckpt.parent.parent / "explain").exists()
