"""``bloodcls test|predict|export --tta`` and ``--ensemble`` end to end on tiny synthetic runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import fit_tiny_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tta_runs")
    return fit_tiny_run(root / "a"), fit_tiny_run(root / "b", backbone="bloodcls_cnn_small")


def _test(ckpt: Path, *extra: str) -> None:
    from bloodcls.cli import main

    main(
        [
            "test",
            "--ckpt_path",
            str(ckpt),
            "--trainer.enable_progress_bar",
            "false",
            "--report.print_table",
            "false",
            *extra,
        ]
    )


def _probs(report_dir: Path) -> dict[str, list[float]]:
    rows = list(csv.DictReader((report_dir / "test_predictions.csv").open()))
    columns = [c for c in rows[0] if c.startswith("prob_")]
    return {r["path"]: [float(r[c]) for c in columns] for r in rows}


@pytest.mark.slow  # fits two tiny runs and evaluates them in process
def test_tta_and_ensemble_change_the_test_report_and_are_recorded(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    run = a.parent.parent
    _test(a)
    plain = _probs(run / "test")
    assert json.loads((run / "test" / "inference.json").read_text())["members"][0]["tta"] == "none"
    _test(a, "--tta", "d4")
    d4 = _probs(run / "test")
    assert plain.keys() == d4.keys()
    assert any(abs(x - y) > 1e-6 for k in plain for x, y in zip(plain[k], d4[k], strict=True))
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["inference"]["members"][0]["tta"] == "d4"

    _test(a, "--ensemble", str(b))
    ens_dir = run / "test_ensemble"  # the first member's own report is left alone
    assert _probs(run / "test") == d4
    record = json.loads((ens_dir / "inference.json").read_text())
    assert [Path(m["ckpt_path"]).resolve() for m in record["members"]] == [a.resolve(), b.resolve()]
    ens = _probs(ens_dir)
    assert any(abs(x - y) > 1e-6 for k in plain for x, y in zip(plain[k], ens[k], strict=True))
    assert all(abs(sum(p) - 1) < 1e-4 for p in ens.values())


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from bloodcls.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]  # the error is one line (after any "using the run's saved configuration" note)


@pytest.mark.slow  # the two_runs fixture fits two models (shared with the other slow tests here)
def test_bad_tta_and_incompatible_members_are_one_line_errors(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    a, _ = two_runs
    assert "tta" in _one_line_error(["test", "--ckpt_path", str(a), "--tta", "d8"], capsys)
    other = torch.load(a, map_location="cpu", weights_only=True)
    other["datamodule_hyper_parameters"]["image_size"] = 64
    other_path = tmp_path / "other.ckpt"
    torch.save(other, other_path)
    assert "image_size 64" in _one_line_error(["predict", "--ckpt_path", str(a), "--ensemble", str(other_path)], capsys)
    # A member that trained on the test images (k-fold folds) cannot be scored on them.
    leaky = torch.load(a, map_location="cpu", weights_only=True)
    split = leaky["BloodCellDataModule"]["split"]
    split["subset"] = ["train" for _ in split["subset"]]
    leaky_path = tmp_path / "leaky.ckpt"
    torch.save(leaky, leaky_path)
    seen = _one_line_error(["test", "--ckpt_path", str(a), "--ensemble", str(leaky_path)], capsys)
    assert "trained or validated on 10 of the 10 test images" in seen


@pytest.mark.slow  # the two_runs fixture fits two models (shared with the other slow tests here)
def test_validate_takes_tta_and_ensemble_and_refuses_members_that_trained_on_validation(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from bloodcls.cli import main

    a, b = two_runs  # same synthetic data and split seed: b selected its checkpoint on a's validation images
    run = a.parent.parent
    quiet = ["--trainer.enable_progress_bar", "false"]
    main(["validate", "--ckpt_path", str(a), "--ensemble", str(b), "--tta", "d4", *quiet])
    out = run / "validate_ensemble"
    record = json.loads((out / "inference.json").read_text())
    assert record["stage"] == "validate" and [m["tta"] for m in record["members"]] == ["d4", "d4"]
    assert "val/balanced_acc" in (out / "metrics.csv").read_text().splitlines()[0]
    leaky = torch.load(b, map_location="cpu", weights_only=True)
    split = leaky["BloodCellDataModule"]["split"]
    n_val = split["subset"].count("val")
    split["subset"] = ["train" if s == "val" else s for s in split["subset"]]
    leaky_path = tmp_path / "leaky.ckpt"
    torch.save(leaky, leaky_path)
    seen = _one_line_error(["validate", "--ckpt_path", str(a), "--ensemble", str(leaky_path)], capsys)
    assert f"trained on {n_val} of the {n_val} validation images" in seen


@pytest.mark.slow  # ONNX export of an ensemble with d4 TTA, with the ONNX Runtime parity check
def test_export_of_a_d4_ensemble_is_one_graph_that_passes_parity(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    import onnx

    from bloodcls.commands.export import main as export_main

    a, b = two_runs
    out = tmp_path / "ens.onnx"
    export_main(["--ckpt_path", str(a), "--ensemble", str(b), "--tta", "d4", "--check", "--output", str(out)])
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["parity"]["passed"]
    assert [m["tta"] for m in record["members"]] == ["d4", "d4"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["bloodcls.tta"]) == ["d4"] and len(json.loads(meta["bloodcls.members"])) == 2


@pytest.mark.slow
def test_predict_with_an_ensemble_writes_its_members_beside_predictions(two_runs: tuple[Path, Path]) -> None:
    from bloodcls.cli import main

    a, b = two_runs
    folder = a.parent.parent  # the first member's run
    cells = folder / "cells"
    cells.mkdir(exist_ok=True)
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i + 100, 80, 160)).save(cells / f"c{i}.png")
    main(
        [
            "predict", "--ckpt_path", str(a), "--ensemble", str(b), "--tta", "d4",
            "--data.init_args.predict_root", str(cells), "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    out = folder / "predict_ensemble"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 2
    record = json.loads((out / "inference.json").read_text())
    assert [m["tta"] for m in record["members"]] == ["d4", "d4"] and record["stage"] == "predict"
