"""The Python API: load_model(...).predict / .explain with the checkpoint's preprocessing, and the README example."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_tiny_run
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny_run(tmp_path_factory.mktemp("api_run"))


def test_import_bloodcls_stays_torch_free() -> None:
    code = "import sys, bloodcls; assert callable(bloodcls.__getattr__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # fits a tiny run
def test_predict_matches_the_models_own_eval_probabilities(ckpt: Path, tmp_path: Path) -> None:
    import torch

    from bloodcls import load_model
    from bloodcls.data.images import resize_square

    model = load_model(ckpt)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(tmp_path / "cell.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = model.predict([tmp_path / "cell.png", Image.fromarray(pixels[1]), pixels[2], tmp_path / "bad.png"])
    assert result.ids[0].endswith("cell.png") and result.ids[1:] == ["image_1", "image_2"]
    assert result.skipped and result.skipped[0][0].endswith("bad.png")
    resized = np.stack([resize_square(p, model.image_size) for p in pixels])
    with torch.no_grad():
        expected = model.members[0].eval_probabilities(torch.from_numpy(resized).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert result.classes == [model.class_names[k] for k in expected.argmax(1)]
    assert result.needs_review is None
    d4 = load_model(ckpt, tta="d4", review_threshold=0.99).predict(pixels)
    assert not np.allclose(d4.probabilities, result.probabilities, atol=1e-7)
    assert d4.needs_review == [True, True, True]  # an untrained-ish model is never 99 % sure
    twin = tmp_path / "twin.ckpt"  # the same weights under another name (the same file twice is refused)
    shutil.copy(ckpt, twin)
    ensemble = load_model([ckpt, twin]).predict(pixels)
    np.testing.assert_allclose(ensemble.probabilities, result.probabilities, atol=1e-6)
    assert ensemble.needs_review is None  # a single model's threshold does not carry over to an ensemble

    # A checkpoint with a referral threshold (bloodcls calibrate) flags cells below it.
    contents = torch.load(ckpt, map_location="cpu", weights_only=True)
    contents["bloodcls"]["inference"].update(review_threshold=0.99, temperature=2.0)
    calibrated = tmp_path / "calibrated.ckpt"
    torch.save(contents, calibrated)
    flagged = load_model(calibrated).predict(pixels)
    assert flagged.needs_review == [True, True, True]
    assert flagged.confidence.max() < result.confidence.max()  # temperature 2 flattens the probabilities


@pytest.mark.slow
def test_tiny_images_warn_and_bad_arguments_are_one_line_errors(ckpt: Path) -> None:
    from bloodcls import load_model
    from bloodcls.errors import UserInputError

    model = load_model(ckpt)
    with pytest.warns(UserWarning, match="far smaller"):
        model.predict(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserInputError, match="no such file"):
        model.predict("does/not/exist.png")
    with pytest.raises(UserInputError, match="tta"):
        load_model(ckpt, tta="d8")
    with pytest.raises(UserInputError, match="target"):
        model.explain(np.zeros((32, 32, 3), np.uint8), target="platelet")
    explained = model.explain(np.zeros((32, 32, 3), np.uint8))
    assert explained.cams.shape == (1, 32, 32) and explained.overlays.dtype == np.uint8


@pytest.mark.slow
def test_the_readme_python_api_example_runs(ckpt: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    subprocess.run(
        [sys.executable, "-c", f"CHECKPOINT = {str(ckpt)!r}\n" + code.group(1)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.mark.slow
def test_a_center_cropped_run_crops_new_images_alike_and_never_joins_a_whole_image_ensemble(
    ckpt: Path, tmp_path: Path
) -> None:
    import torch

    from bloodcls import load_model
    from bloodcls.data.images import resize_square
    from bloodcls.errors import UserInputError

    contents = torch.load(ckpt, map_location="cpu", weights_only=True)
    contents["datamodule_hyper_parameters"]["center_crop"] = 0.5
    cropped_ckpt = tmp_path / "cropped.ckpt"
    torch.save(contents, cropped_ckpt)
    model = load_model(cropped_ckpt)
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(tmp_path / "cell.png")
    result = model.predict([tmp_path / "cell.png", pixels[1]])
    inputs = np.stack([resize_square(p, model.image_size, 0.5) for p in pixels])
    with torch.no_grad():
        expected = model.members[0].eval_probabilities(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    with pytest.raises(UserInputError, match="center_crop"):
        load_model([ckpt, cropped_ckpt])
