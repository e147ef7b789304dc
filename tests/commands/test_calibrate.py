"""bloodcls calibrate on a 1-epoch run: settings fitted on the run's validation split and stored in the checkpoint
(weights untouched), used by test (calibration / referral report) and predict (needs_review); one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, fit_tiny_run
from PIL import Image

from bloodcls.callbacks.reports import NEEDS_REVIEW
from bloodcls.checkpoints import load_checkpoint
from bloodcls.cli import BloodCLI
from bloodcls.cli import main as cli_main
from bloodcls.commands.calibrate import main as calibrate_main
from bloodcls.commands.calibrate import validation_logits, write_inference_settings
from bloodcls.commands.export import load_classifier
from bloodcls.evaluation.calibration_report import COVERAGE_PNG, RELIABILITY_BEFORE_AFTER_PNG
from bloodcls.inference import InferenceSettings
from bloodcls.inference import calibration as C


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a 1-epoch synthetic run (bloodcls_cnn_tiny, 32 px, 12 images per class)."""
    return fit_tiny_run(tmp_path_factory.mktemp("calibrate_run")).parent.parent


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run (each test changes its checkpoint)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _val_rows(run: Path) -> list[dict[str, str]]:
    with (run / "split.csv").open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["subset"] == "val"]


def test_calibrate_stores_the_fit_on_validation_and_keeps_the_weights(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = run / "checkpoints" / "best.ckpt"
    before = load_checkpoint(best)
    calibrate_main(["--ckpt_path", str(best), "--target_accuracy", "0.3", "--device", "cpu"])
    after = load_checkpoint(best)
    assert after["state_dict"].keys() == before["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert after["BloodCellDataModule"] == before["BloodCellDataModule"]
    stored = after["bloodcls"]["inference"]
    settings = InferenceSettings.from_dict(stored)
    fitted = settings.fitted_on
    assert fitted["split"] == "val" and fitted["n_images"] == len(_val_rows(run)) > 0
    assert fitted["after"]["nll"] <= fitted["before"]["nll"] + 1e-9
    assert fitted["after"]["acc"] == fitted["before"]["acc"]

    # The stored numbers are those of the run's own validation logits.
    model = load_classifier(best)
    assert model.inference.temperature == settings.temperature != 1.0
    logits, labels = validation_logits(model, best, "none", 64, torch.device("cpu"))
    assert settings.temperature == pytest.approx(C.fit_temperature(logits, labels.numpy()), rel=1e-6)
    choice = C.choose_review_threshold(C.tempered_probabilities(logits, settings.temperature), labels.numpy(), 0.3)
    assert settings.review_threshold == (None if choice is None else pytest.approx(choice.threshold))
    assert settings.target_accuracy == 0.3 and fitted["review"]["reachable"] == (choice is not None)
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "temperature" in out


def test_recalibrating_replaces_the_settings(run: Path) -> None:
    best = run / "checkpoints" / "best.ckpt"
    write_inference_settings(best, InferenceSettings(temperature=7.0, review_threshold=0.9, target_accuracy=0.99))
    calibrate_main(["--ckpt_path", str(best), "--tta", "d4", "--device", "cpu"])
    settings = InferenceSettings.from_dict(load_checkpoint(best)["bloodcls"]["inference"])
    assert settings.tta == "d4" and settings.review_threshold is None and settings.target_accuracy is None
    assert settings.temperature != 7.0


def test_a_checkpoint_without_validation_images_is_one_line(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLOODCLS_DEBUG", raising=False)
    best = run / "checkpoints" / "best.ckpt"
    checkpoint = load_checkpoint(best)
    split = checkpoint["BloodCellDataModule"]["split"]
    split["subset"] = ["train" if s == "val" else s for s in split["subset"]]
    torch.save(checkpoint, best)
    data = best.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        calibrate_main(["--ckpt_path", str(best), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no validation images" in err and "Traceback" not in err
    assert best.read_bytes() == data  # nothing written


@pytest.mark.parametrize("bad", [["--target_accuracy", "1.5"], ["--tta", "d8"]])
def test_bad_options_are_one_line(run: Path, bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        calibrate_main(["--ckpt_path", str(run / "checkpoints" / "best.ckpt"), *bad])
    assert exit_info.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_test_and_predict_use_the_stored_temperature_and_threshold(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    best = run / "checkpoints" / "best.ckpt"
    write_inference_settings(best, InferenceSettings(temperature=2.5, review_threshold=0.3, target_accuracy=0.9))
    monkeypatch.chdir(tmp_path)
    cli_main(["test", "--ckpt_path", str(best)])
    report = run / "test"
    metrics = json.loads((report / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["temperature"] == 2.5
    assert calibration["after"]["ece"] == pytest.approx(metrics["ece"])  # "after" is what the report reports
    assert calibration["after"]["nll"] == pytest.approx(metrics["nll"], rel=1e-5)
    assert calibration["before"]["nll"] != pytest.approx(calibration["after"]["nll"])
    with (report / "test_predictions.csv").open(newline="") as fh:
        confidence = np.array([float(r["confidence"]) for r in csv.DictReader(fh)])
    referral = metrics["referral"]
    assert referral["review_threshold"] == 0.3
    assert referral["coverage"] == pytest.approx(float((confidence >= 0.3).mean()), abs=1e-9)
    assert (report / RELIABILITY_BEFORE_AFTER_PNG).is_file() and (report / COVERAGE_PNG).is_file()
    for name in ("confusion_matrix.png", "roc.png", "calibration.png", "per_class.csv"):  # the existing files stay
        assert (report / name).is_file()

    # Predict on 10 images a quarter of the training size and one of the training size: a warning with the count.
    images = tmp_path / "to_classify"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(11):
        side = 32 if i == 10 else 8
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(images / f"cell{i:02d}.png")
    cli_main(["predict", "--ckpt_path", str(best), "--data.init_args.predict_root", str(images)])
    small = [str(w.message) for w in recwarn if "far smaller than the training size" in str(w.message)]
    assert len(small) == 1 and small[0].startswith("10 of 11 images")
    rows = _predictions(run)
    assert len(rows) == 11 and all(row[NEEDS_REVIEW] in ("true", "false") for row in rows)

    # needs_review is "confidence below the threshold": between two middle confidences both values appear (halfway:
    # the CSV's confidences are rounded to 6 decimals).
    distinct = sorted({float(r["confidence"]) for r in rows})
    assert len(distinct) > 1
    middle = len(distinct) // 2
    threshold = (distinct[middle - 1] + distinct[middle]) / 2
    write_inference_settings(best, InferenceSettings(temperature=2.5, review_threshold=threshold))
    cli_main(["predict", "--ckpt_path", str(best), "--data.init_args.predict_root", str(images)])
    rows = _predictions(run)
    flags = [row[NEEDS_REVIEW] for row in rows]
    assert flags == ["true" if float(row["confidence"]) < threshold else "false" for row in rows]
    assert "true" in flags and "false" in flags

    # Without a threshold the column is absent.
    write_inference_settings(best, InferenceSettings(temperature=2.5))
    cli_main(["predict", "--ckpt_path", str(best), "--data.init_args.predict_root", str(images)])
    assert NEEDS_REVIEW not in _predictions(run)[0]


def _predictions(run: Path) -> list[dict[str, str]]:
    with (run / "predict" / "predictions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_calibrate_after_fit_calibrates_best_and_last(tmp_path: Path) -> None:
    config = tmp_path / "calibrate.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: bloodcls.callbacks.calibration.CalibrateAfterFit\n"
        "      init_args: {target_accuracy: 0.2}\n"
    )
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(config)]
    args += ["--model.init_args.backbone", "bloodcls_cnn_tiny", "--data.init_args.image_size", "32"]
    args += ["--data.source.per_class", "8", "--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0"]
    args += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    BloodCLI(args=args)
    checkpoints = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        settings = InferenceSettings.from_dict(load_checkpoint(checkpoints / name)["bloodcls"]["inference"])
        assert settings.fitted_on["split"] == "val" and settings.target_accuracy == 0.2
        assert settings.temperature != 1.0

    # Resuming changes the weights: the settings fitted to the old ones are dropped, not carried into new checkpoints.
    resume = [*args[:3], *args[5:]]  # without the calibration callback
    resume[resume.index("--trainer.max_epochs") + 1] = "2"
    BloodCLI(args=[*resume, "--ckpt_path", str(checkpoints / "last.ckpt")])
    resumed = load_checkpoint(checkpoints.parent.parent / "version_1" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 1
    assert InferenceSettings.from_dict(resumed["bloodcls"]["inference"]) == InferenceSettings()


def test_a_threshold_is_used_only_with_the_tta_and_the_single_model_it_was_chosen_for(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = run / "checkpoints" / "best.ckpt"
    chosen_without_tta = InferenceSettings(temperature=2.5, review_threshold=0.3, fitted_on={"tta": "none"})
    write_inference_settings(best, chosen_without_tta)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="chosen with tta none; with tta d4 it is not used"):
        cli_main(["test", "--ckpt_path", str(best), "--tta", "d4"])
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["referral"]["review_threshold"] is None
    assert metrics["calibration"]["temperature"] == 2.5  # the temperature stays
    cli_main(["test", "--ckpt_path", str(best), "--tta", "none"])
    assert json.loads((run / "test" / "metrics.json").read_text())["referral"]["review_threshold"] == 0.3
    member = run / "checkpoints" / "last.ckpt"  # same classes; an ensemble's averaged probabilities are flatter
    cli_main(["test", "--ckpt_path", str(best), "--ensemble", str(member)])
    ensemble = json.loads((run / "test_ensemble" / "metrics.json").read_text())
    assert ensemble["referral"]["review_threshold"] is None
    assert "calibration" not in ensemble  # no single model's plain softmax to compare the ensemble with


def test_set_tta_keeps_a_threshold_only_for_the_mode_it_was_fitted_with() -> None:
    from types import SimpleNamespace

    from bloodcls.inference.ensemble import set_tta

    for fitted, wanted, kept in (("none", "none", True), ("d4", "d4", True), ("d4", "none", False)):
        model = SimpleNamespace(
            inference=InferenceSettings(review_threshold=0.5, tta=fitted, fitted_on={"tta": fitted})  # type: ignore[arg-type]
        )
        if kept:
            set_tta(model, wanted)
        else:
            with pytest.warns(UserWarning, match=f"chosen with tta {fitted}"):
                set_tta(model, wanted)
        assert model.inference.tta == wanted
        assert (model.inference.review_threshold == 0.5) is kept
    older = SimpleNamespace(inference=InferenceSettings(review_threshold=0.5, tta="d4"))  # no fitted_on["tta"]
    with pytest.warns(UserWarning, match="chosen with tta d4"):
        set_tta(older, "none")
