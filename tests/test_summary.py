"""``bloodcls summarize``: hand-computed mean ± sample std over runs, undefined metrics, files, one-line errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from bloodcls.commands.summarize import main as summarize_main
from bloodcls.commands.summarize import summarize_runs, summarize_values


def _metrics(acc: float, auroc: float | None, recall_a: float) -> dict[str, Any]:
    """A metrics.json as bloodcls test writes it (only the keys the summary reads, plus the bulky ones)."""
    return {
        "n": 10,
        "acc": acc,
        "balanced_acc": acc - 0.1,
        "macro_f1": acc - 0.2,
        "macro_precision": acc,
        "macro_recall": acc - 0.1,
        "macro_specificity": 0.95,
        "auroc": auroc,
        "nll": 0.5,
        "ece": 0.05,
        "per_class": [
            {
                "class": "a",
                "support": 5,
                "precision": 1.0,
                "recall": recall_a,
                "f1": 0.9,
                "specificity": 1.0,
                "auroc": None,
            },
            {"class": "b", "support": 5, "precision": 0.8, "recall": 1.0, "f1": 0.9, "specificity": 0.9, "auroc": 0.9},
        ],
        "confusion_matrix": [[4, 1], [0, 5]],
        "run": {"checkpoint": "x.ckpt"},
    }


def _write_run(root: Path, name: str, metrics: dict[str, Any]) -> Path:
    run = root / name
    (run / "test").mkdir(parents=True)
    (run / "test" / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_summarize_values_matches_hand_computation() -> None:
    # 0.8, 0.9, 1.0: mean 0.9; squared deviations 0.01 + 0 + 0.01 = 0.02; sample var 0.02 / 2 = 0.01 -> std 0.1.
    s = summarize_values("acc", [0.8, 0.9, 1.0])
    assert (s.n, s.min, s.max) == (3, 0.8, 1.0)
    assert s.mean == pytest.approx(0.9)
    assert s.std == pytest.approx(0.1)


def test_undefined_values_are_not_counted_and_single_values_have_no_std() -> None:
    s = summarize_values("auroc", [0.9, None, float("nan")])
    assert (s.n, s.mean, s.std) == (1, 0.9, None)
    assert summarize_values("auroc", [None, None]).mean is None


def test_summarize_runs_covers_headline_and_per_class_metrics() -> None:
    runs = [_metrics(0.8, 0.9, 0.6), _metrics(1.0, None, 1.0)]
    by_name = {s.metric: s for s in summarize_runs(runs)}
    assert list(by_name)[:3] == ["acc", "balanced_acc", "macro_f1"]
    assert by_name["acc"].mean == pytest.approx(0.9)
    assert by_name["acc"].std == pytest.approx(math.sqrt(0.02))  # deviations 0.1, 0.1 -> var 0.02 / 1
    assert by_name["balanced_acc"].mean == pytest.approx(0.8)
    assert (by_name["auroc"].n, by_name["auroc"].mean) == (1, 0.9)  # undefined in the second run
    assert by_name["recall/a"].mean == pytest.approx(0.8)
    assert by_name["recall/a"].std == pytest.approx(math.sqrt(0.08))  # 0.6 and 1.0: deviations 0.2 -> 0.08
    assert by_name["auroc/a"].n == 0


def test_command_prints_table_and_writes_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_write_run(tmp_path, f"fold{i}", _metrics(acc, 0.9, 1.0)) for i, acc in enumerate((0.8, 0.9, 1.0))]
    out_csv, out_json = tmp_path / "out" / "summary.csv", tmp_path / "out" / "summary.json"
    summarize_main([*map(str, runs), "--output", str(out_csv), "--output", str(out_json)])
    printed = capsys.readouterr().out
    assert "over 3 runs" in printed
    assert "90.00 ± 10.00" in printed  # acc in percent

    rows = {row["metric"]: row for row in csv.DictReader(out_csv.open())}
    assert float(rows["acc"]["mean"]) == pytest.approx(0.9)
    assert float(rows["acc"]["std"]) == pytest.approx(0.1)
    assert rows["acc"]["n"] == "3"
    assert rows["auroc/a"]["mean"] == ""  # undefined everywhere: an empty cell, not "None"

    doc = json.loads(out_json.read_text())
    assert doc["runs"] == [str(r) for r in runs]
    assert doc["metrics"]["acc"]["values"] == [0.8, 0.9, 1.0]
    assert doc["metrics"]["f1/b"]["mean"] == pytest.approx(0.9)


def test_missing_metrics_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_run(tmp_path, "fold0", _metrics(0.9, 0.9, 1.0))
    missing = tmp_path / "fold1"
    missing.mkdir()
    with pytest.raises(SystemExit) as exc:
        summarize_main([str(good), str(missing)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{missing}: no test/metrics.json" in err


def test_bad_output_suffix_and_bad_json_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_run(tmp_path, "fold0", _metrics(0.9, 0.9, 1.0))
    with pytest.raises(SystemExit):
        summarize_main([str(good), "--output", str(tmp_path / "summary.txt")])
    assert "expected a file name ending in .csv or .json" in capsys.readouterr().err
    broken = tmp_path / "broken" / "test"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(SystemExit):
        summarize_main([str(broken.parent)])
    assert "not a readable metrics.json" in capsys.readouterr().err


def test_console_script_routes_to_summarize(tmp_path: Path) -> None:
    run = _write_run(tmp_path, "seed0", _metrics(0.9, 0.9, 1.0))
    result = run_cli("summarize", str(run), "--output", str(tmp_path / "s.csv"))
    assert result.returncode == 0, result.stderr
    assert "over 1 run " in result.stdout
    assert (tmp_path / "s.csv").is_file()


# ------------------------------------------------------------------------------------ runs that must not be averaged
def _with_classes(metrics: dict[str, Any], classes: list[str], n: int | None = None) -> dict[str, Any]:
    rows = [{**metrics["per_class"][i % 2], "class": c} for i, c in enumerate(classes)]
    return {**metrics, "per_class": rows, "n": metrics["n"] if n is None else n}


def _write_split(run: Path, test: list[str], rest: list[str]) -> None:
    """split.csv with content hashes ``test`` in the test subset and ``rest`` in train."""
    lines = ["path,hash,label,subset"]
    lines += [f"img_{h}.png,{h},a,test" for h in test] + [f"img_{h}.png,{h},a,train" for h in rest]
    (run / "split.csv").write_text("\n".join(lines) + "\n")


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        summarize_main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bloodcls summarize: error:")
    return err


def test_runs_with_different_classes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The reported case: a 5-class synthetic run averaged with an 8-class PBC run.
    synthetic = _write_run(tmp_path, "synthetic", _with_classes(_metrics(0.6, 0.9, 1.0), list("abcde")))
    pbc = _write_run(tmp_path, "pbc", _with_classes(_metrics(0.97, 0.9, 1.0), list("abcdefgh")))
    err = _refused([str(synthetic), str(pbc)], capsys)
    assert f"{pbc} has classes [a, b, c, d, e, f, g, h] but {synthetic} has [a, b, c, d, e]" in err


def test_runs_tested_on_different_images_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_run(tmp_path, "a", _metrics(0.8, 0.9, 1.0))
    b = _write_run(tmp_path, "b", _metrics(0.9, 0.9, 1.0))
    _write_split(a, ["h1", "h2", "h3"], ["h4", "h5", "h6"])
    _write_split(b, ["h1", "h2", "h4"], ["h3", "h5", "h6"])  # overlapping, not equal: another split
    err = _refused([str(a), str(b)], capsys)
    assert f"{b} was tested on a different test set than {a} (3 vs 3 images, 2 not in both" in err


def test_disjoint_test_sets_of_different_datasets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write_run(tmp_path, "a", _metrics(0.8, 0.9, 1.0))
    b = _write_run(tmp_path, "b", _metrics(0.9, 0.9, 1.0))
    _write_split(a, ["h1", "h2"], ["h3", "h4"])
    _write_split(b, ["x1", "x2"], ["x3", "x4"])
    assert "different test set" in _refused([str(a), str(b)], capsys)


def test_seeds_on_one_test_set_and_kfold_folds_are_averaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = [_write_run(tmp_path, f"seed{i}", _metrics(acc, 0.9, 1.0)) for i, acc in enumerate((0.8, 1.0))]
    for run in seeds:
        _write_split(run, ["h1", "h2"], ["h3", "h4"] if run.name == "seed0" else ["h4", "h3"])
    summarize_main([str(r) for r in seeds])
    assert "90.00 ± 14.14" in capsys.readouterr().out
    images = [f"h{i}" for i in range(9)]
    folds = [_write_run(tmp_path, f"fold{k}", _metrics(acc, 0.9, 1.0)) for k, acc in enumerate((0.8, 0.9, 1.0))]
    for k, run in enumerate(folds):  # three disjoint test thirds of the same nine images
        _write_split(run, images[3 * k : 3 * k + 3], images[: 3 * k] + images[3 * k + 3 :])
    summarize_main([str(r) for r in folds])
    assert "90.00 ± 10.00" in capsys.readouterr().out


def test_a_fold_counted_more_often_than_the_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [f"h{i}" for i in range(4)]
    runs = []
    for name, k in (("fold0_seed0", 0), ("fold0_seed1", 0), ("fold1_seed0", 1)):  # fold 0 would weigh double
        runs.append(_write_run(tmp_path, name, _metrics(0.9, 0.9, 1.0)))
        _write_split(runs[-1], images[2 * k : 2 * k + 2], images[: 2 * k] + images[2 * k + 2 :])
    assert "different test set" in _refused([str(r) for r in runs], capsys)
    runs.append(_write_run(tmp_path, "fold1_seed1", _metrics(0.9, 0.9, 1.0)))  # folds x seeds, balanced: fine
    _write_split(runs[-1], images[2:], images[:2])
    summarize_main([str(r) for r in runs])
    assert "over 4 runs" in capsys.readouterr().out


def test_without_split_csv_the_test_size_decides_unless_the_configs_are_kfold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write_run(tmp_path, "a", _metrics(0.8, 0.9, 1.0))
    b = _write_run(tmp_path, "b", _with_classes(_metrics(0.9, 0.9, 1.0), ["a", "b"], n=12))
    assert f"{b} was tested on 12 images but {a} on 10" in _refused([str(a), str(b)], capsys)
    for run, fold in ((a, 0), (b, 1)):  # folds of 22 images: 10 and 12 test images
        (run / "config.yaml").write_text(
            f"data:\n  class_path: bloodcls.data.BloodCellDataModule\n  init_args:\n    n_folds: 2\n    fold: {fold}\n"
        )
    summarize_main([str(a), str(b)])
    assert "over 2 runs" in capsys.readouterr().out


def _write_scored(run: Path, hashes: list[str]) -> None:
    """The test report's test_predictions.csv scoring the images ``img_<hash>.png`` (as _write_split names them)."""
    lines = ["path,label,pred,confidence"] + [f"img_{h}.png,a,a,0.9" for h in hashes]
    (run / "test" / "test_predictions.csv").write_text("\n".join(lines) + "\n")


def test_a_run_re_tested_on_other_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_run(tmp_path, "a", _metrics(0.8, 0.9, 1.0))
    b = _write_run(tmp_path, "b", _metrics(0.9, 0.9, 1.0))
    for run in (a, b):  # the same fit-time split ...
        _write_split(run, ["h1", "h2"], ["h3", "h4"])
    _write_scored(a, ["h1", "h2"])
    _write_scored(b, ["h2", "h1"])  # ... scored alike (order does not matter): averaged
    summarize_main([str(a), str(b)])
    assert "over 2 runs" in capsys.readouterr().out
    _write_scored(b, ["h2", "h3"])  # b re-tested on another split file: its report scored other images
    assert f"{b} was tested on a different test set than {a} (2 vs 2 images, 2 not in both)" in _refused(
        [str(a), str(b)], capsys
    )


def test_runs_tested_with_other_tta_or_members_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def inference(*ttas: str) -> dict[str, Any]:
        return {"inference": {"members": [{"ckpt_path": f"m{i}.ckpt", "tta": t} for i, t in enumerate(ttas)]}}

    a = _write_run(tmp_path, "a", {**_metrics(0.8, 0.9, 1.0), **inference("none")})
    b = _write_run(tmp_path, "b", {**_metrics(0.9, 0.9, 1.0), **inference("none")})
    summarize_main([str(a), str(b)])
    assert "over 2 runs" in capsys.readouterr().out
    (b / "test" / "metrics.json").write_text(json.dumps({**_metrics(0.9, 0.9, 1.0), **inference("d4")}))
    err = _refused([str(a), str(b)], capsys)
    assert f"{b} was tested with 1 model with tta d4 but {a} with 1 model with tta none" in err
    (b / "test" / "metrics.json").write_text(json.dumps({**_metrics(0.9, 0.9, 1.0), **inference("none", "none")}))
    assert "2 models with tta none/none" in _refused([str(a), str(b)], capsys)


def test_folds_tested_from_another_root_and_runs_without_an_inference_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [f"h{i}" for i in range(6)]
    folds = [_write_run(tmp_path, f"fold{k}", _metrics(0.9, 0.9, 1.0)) for k in range(3)]
    for k, run in enumerate(folds):
        _write_split(run, images[2 * k : 2 * k + 2], images[: 2 * k] + images[2 * k + 2 :])
        (run / "test" / "test_predictions.csv").write_text(
            f"path,label\n/elsewhere/{k}a.png,a\n/elsewhere/{k}b.png,a\n"
        )
    summarize_main([str(r) for r in folds])  # paths the splits do not know: their test rows decide, still folds
    assert "over 3 runs" in capsys.readouterr().out

    def with_tta(tta: str | None) -> dict[str, Any]:
        record = {} if tta is None else {"inference": {"members": [{"ckpt_path": "m.ckpt", "tta": tta}]}}
        return {**_metrics(0.9, 0.9, 1.0), **record}

    runs = [_write_run(tmp_path, name, with_tta(t)) for name, t in (("old", None), ("plain", "none"), ("d4", "d4"))]
    assert "tested with 1 model with tta d4 but" in _refused([str(r) for r in runs], capsys)  # not only vs the first
