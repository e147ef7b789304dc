"""Classical baseline: segmentation of synthetic cells, feature vector contract, SVM / RF accuracy, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from bloodcls.baseline import FEATURE_NAMES, extract_features, extract_many, fit_baseline, predict_proba
from bloodcls.baseline.segmentation import segment_cell
from bloodcls.commands.baseline import main as baseline_main
from bloodcls.data.synthetic import SYNTHETIC_CLASSES, generate_dataset, render_cell

LYMPHOCYTE = SYNTHETIC_CLASSES.index("lymphocyte")
MONOCYTE = SYNTHETIC_CLASSES.index("monocyte")


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray]:
    return generate_dataset(40, size=64, seed=0)  # (200, 64, 64, 3), 40 per class


@pytest.fixture(scope="module")
def features(dataset: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return extract_many(dataset[0], workers=2)


@pytest.mark.parametrize("label", range(len(SYNTHETIC_CLASSES)), ids=SYNTHETIC_CLASSES)
def test_segmentation_finds_the_centred_cell_and_its_nucleus(label: int) -> None:
    for i in range(6):
        image = render_cell(label, np.random.default_rng([5, label, i]), 64)
        seg = segment_cell(image)
        assert not seg.fallback
        assert seg.cell.shape == seg.nucleus.shape == (64, 64) and seg.cell.dtype == bool
        assert seg.cell[32, 32] or seg.cell[31:34, 31:34].any()  # the crop is centred on the cell
        assert seg.nucleus.any() and not (seg.nucleus & ~seg.cell).any()
        # A leukocyte, not the whole smear: between ~2 % and ~40 % of the crop.
        assert 0.02 < seg.cell.mean() < 0.4


def test_lymphocyte_nucleus_fills_more_of_its_cell_than_a_monocytes() -> None:
    def ratio(label: int) -> float:
        segs = [segment_cell(render_cell(label, np.random.default_rng([9, label, i]), 64)) for i in range(10)]
        return float(np.mean([s.nucleus.sum() / s.cell.sum() for s in segs]))

    assert ratio(LYMPHOCYTE) > ratio(MONOCYTE) + 0.1


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64, 3), np.uint8),
        np.full((64, 64, 3), 255, np.uint8),
        np.zeros((5, 5, 3), np.uint8),
        np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8),  # grey
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["black", "white", "tiny", "grey", "empty"],
)
def test_odd_images_fall_back_to_a_centred_disc_without_raising(image: np.ndarray) -> None:
    seg = segment_cell(image)
    assert seg.cell.shape == seg.nucleus.shape and not (seg.nucleus & ~seg.cell).any()
    if image.size and np.ptp(image) == 0:
        assert seg.fallback and seg.cell.any()
    if image.size:
        vector = extract_features(image)
        assert vector.shape == (len(FEATURE_NAMES),) and np.isfinite(vector).all()


def test_feature_vector_contract(features: np.ndarray) -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert features.shape == (200, len(FEATURE_NAMES)) and features.dtype == np.float64
    assert np.isfinite(features).all()
    col = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    assert (col["glcm_contrast"] >= 0).all()
    for name in ("glcm_homogeneity", "glcm_energy", "cell_circularity", "cell_solidity", "nucleus_cell_ratio"):
        assert ((col[name] >= 0) & (col[name] <= 1)).all(), name
    assert ((col["glcm_correlation"] >= -1) & (col["glcm_correlation"] <= 1)).all()
    lbp = features[:, [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("lbp_")]]
    assert lbp.shape[1] == 10 and np.allclose(lbp.sum(axis=1), 1.0)
    assert (col["nucleus_lobes"] >= 1).all() and (col["seg_fallback"] == 0).all()
    colour = features[:, [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(("nucleus_R", "cytoplasm_H"))]]
    assert ((colour >= 0) & (colour <= 1)).all()


def test_threads_give_the_same_features_as_a_loop(dataset: tuple[np.ndarray, np.ndarray], features: np.ndarray) -> None:
    images = dataset[0][::20]
    assert np.array_equal(extract_many(images, workers=1), features[::20])
    assert extract_many(images[:0]).shape == (0, len(FEATURE_NAMES))


@pytest.mark.parametrize("method", ["svm", "rf"])
def test_classifiers_beat_chance_by_far_on_held_out_cells(
    method: str, dataset: tuple[np.ndarray, np.ndarray], features: np.ndarray
) -> None:
    y = dataset[1]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    # 50 % train, 20 % validation (for C / gamma or forest settings), 30 % held out.
    train, val, test = order[:100], order[100:140], order[140:]
    model = fit_baseline(features[train], y[train], method, seed=0, X_val=features[val], y_val=y[val])  # type: ignore[arg-type]
    probs = predict_proba(model, features[test], num_classes=5)
    assert probs.shape == (len(test), 5) and np.allclose(probs.sum(axis=1), 1.0)
    accuracy = float((probs.argmax(axis=1) == y[test]).mean())
    assert accuracy > 0.6, accuracy
    assert model.selection_["scored_on"] == "validation" and model.selection_["params"]


def test_predict_proba_keeps_columns_of_classes_missing_from_training(features: np.ndarray) -> None:
    y = np.repeat(np.arange(5), 40)
    keep = y != 2
    model = fit_baseline(features[keep], y[keep], "rf", seed=0)  # no validation set: CV on the training set
    probs = predict_proba(model, features[:3], num_classes=5)
    assert probs.shape == (3, 5) and (probs[:, 2] == 0).all()


@pytest.mark.slow  # the whole command: segmentation, features and both classifiers on a generated folder
def test_command_writes_the_deep_models_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline_main(
        [
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--data.source.per_class",
            "30",
            "--method",
            "rf",
            "--output",
            str(tmp_path),
        ]
    )
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "split.csv", "test_predictions.csv"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] > 0 and metrics["acc"] > 0.6
    run = metrics["run"]
    assert run["method"] == "rf" and run["features"] == FEATURE_NAMES
    assert run["split"] == str(tmp_path / "split.csv") and run["image_size"] == 64
    # The same data summary as a deep model's test report.
    assert run["data"]["source"] == "synthetic" and run["data"]["n_usable"] == 150
    assert "report written to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "knn"], "invalid choice: 'knn'"),
        ([], "--config FILE.yaml is required"),
        (["--data.init_args.no_such_key", "1"], "no_such_key"),
        (
            ["--data.init_args.root", "/no/such/dir", "--data.init_args.source", "bloodcls.data.FolderSource"],
            "/no/such/dir",
        ),
    ],
    ids=["method", "no-config", "unknown-key", "missing-root"],
)
def test_command_errors_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(REPO / "configs" / "quickstart.yaml")] if args else []
    with pytest.raises(SystemExit) as exc:
        baseline_main([*config, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bloodcls baseline: error: ") and message in err[0]


def test_a_config_that_is_not_yaml_config_gives_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("\n".join(f"line {i}: not a config" for i in range(200)))
    with pytest.raises(SystemExit) as exc:
        baseline_main(["--config", str(text)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bloodcls baseline: error: ") and len(err[0]) < 400
