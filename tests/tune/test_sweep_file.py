"""Sweep files (the shipped ones included), config resolution for trials, and trial summaries / plots."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bloodcls.commands.common import one_line
from bloodcls.errors import UserInputError
from bloodcls.tuning.config import (
    absolute_paths,
    check_space_keys,
    cli_value,
    overrides,
    resolve_config,
    write_config,
)
from bloodcls.tuning.plots import grid_lines, means_per_value, plot_sweep, short_names
from bloodcls.tuning.results import TrialRow, best_trial, error_summary, rank, summarize_trial
from bloodcls.tuning.space import Distribution
from bloodcls.tuning.sweep import (
    Asha,
    grid_size,
    load_sweep,
    normalise_key,
    parse_sweep,
    pin_overridden_keys,
    with_command_line,
)
from bloodcls.tuning.trial import TrialPlan, trial_args

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# The strategy fragment each shipped sweep is written for (its header comment shows the full command).
SWEEP_STRATEGY = {
    "pseudo_label_thresholds": "pseudo_label",
    "self_training": "self_training",
    "labels_per_class": "fixmatch",
    "linear_probe": "linear_probe",
    "pseudo_label_grid": "pseudo_label",
    "labeled_fraction": "fixmatch",
    "flexmatch": "flexmatch",
    "freematch": "freematch",
    "pbc_recipe": "supervised",
}
SPACE = {"model.init_args.confidence_threshold": "uniform(0.7, 0.99)"}


def test_every_shipped_sweep_has_a_strategy_here() -> None:
    assert SWEEPS and {s.stem for s in SWEEPS} == set(SWEEP_STRATEGY)


# One sweep in the fast tier; every shipped sweep in the slow one (each resolves fit configs: seconds).
@pytest.mark.parametrize(
    "sweep_file",
    [s if i == 0 else pytest.param(s, marks=pytest.mark.slow) for i, s in enumerate(sorted(SWEEPS))],
    ids=[s.stem for s in sorted(SWEEPS)],
)
def test_shipped_sweeps_load_and_every_key_parses(sweep_file: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_file)
    assert sweep.metric.startswith("val/") and sweep.space
    strategy = REPO / "configs" / "strategies" / f"{SWEEP_STRATEGY[sweep_file.stem]}.yaml"
    base = write_config(
        resolve_config(["--config", str(QUICKSTART), "--config", str(strategy)]), tmp_path / "b.yaml", ""
    )
    check_space_keys(base, sweep, str(sweep_file))  # raises on a key or value fit's parser refuses


def test_parse_sweep_defaults_and_values() -> None:
    sweep = parse_sweep({"space": SPACE}, "s.yaml", "s")
    assert (sweep.name, sweep.metric, sweep.mode, sweep.search, sweep.num_samples) == (
        "s",
        "val/balanced_acc",
        "max",
        "random",
        10,
    )
    assert sweep.scheduler is None and (sweep.cpus_per_trial, sweep.gpus_per_trial) == (1.0, 0.0)
    full = parse_sweep(
        {
            "name": "thr",
            "metric": "val/loss",
            "mode": "min",
            "search": "optuna",
            "num_samples": 3,
            "seed": 7,
            "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3, "max_t": 10},
            "resources": {"cpu": 2, "gpu": 0.5},
            "space": {**SPACE, "trainer.max_epochs": 10},
        },
        "s.yaml",
        "s",
    )
    assert full.scheduler == Asha(grace_period=2, reduction_factor=3.0, max_t=10)
    assert (full.name, full.mode, full.search, full.seed, full.gpus_per_trial) == ("thr", "min", "optuna", 7, 0.5)
    assert full.fixed == {"trainer.max_epochs": 10}
    assert parse_sweep({"space": SPACE, "scheduler": "asha"}, "s", "s").scheduler == Asha()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"space": SPACE, "metric": "test/acc"}, "metric='test/acc' must be a validation metric"),
        ({"space": SPACE, "metric": "balanced_acc"}, "never selected on test metrics"),
        ({"space": SPACE, "mode": "maximum"}, "mode='maximum' must be max or min"),
        ({"space": SPACE, "search": "bayes"}, "search='bayes' must be one of: random, optuna"),
        ({"space": SPACE, "num_samples": 0}, "num_samples=0 must be a positive integer"),
        ({"space": SPACE, "scheduler": {"type": "hyperband"}}, "scheduler must be 'none' or a mapping with type: asha"),
        ({"space": SPACE, "scheduler": {"type": "asha", "reduction_factor": 1}}, "reduction_factor=1 must be > 1"),
        ({"space": SPACE, "scheduler": {"type": "asha", "grace": 1}}, "scheduler has unknown keys ['grace']"),
        ({"space": SPACE, "resources": {"cpus": 2}}, "resources must be a mapping with cpu and/or gpu"),
        ({"space": SPACE, "metrics": "val/acc"}, "unknown keys ['metrics']"),
        ({"space": SPACE, "search": "grid"}, "search=grid needs choice([...]) for every searched key"),
        ({"space": {"model.init_args.x": "beta(1, 2)"}}, "space.model.init_args.x: unknown distribution 'beta'"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(raw: object, message: str) -> None:
    with pytest.raises(UserInputError) as err:
        parse_sweep(raw, "sweep file s.yaml", "s")
    text = str(err.value)
    assert text.startswith("sweep file s.yaml: ") and message in text and "\n" not in text


def test_load_sweep_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--sweep: .* does not exist"):
        load_sweep(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("space: [unclosed\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_sweep(broken)


def test_command_line_overrides_the_sweep_file() -> None:
    sweep = parse_sweep({"space": SPACE, "num_samples": 20, "search": "optuna"}, "s", "s")
    changed = with_command_line(sweep, num_samples=2, search="random", seed=3, cpus_per_trial=0.5, gpus_per_trial=1)
    assert (changed.num_samples, changed.search, changed.seed, changed.cpus_per_trial, changed.gpus_per_trial) == (
        2,
        "random",
        3,
        0.5,
        1,
    )
    assert with_command_line(sweep).num_samples == 20
    with pytest.raises(UserInputError, match="--num_samples"):
        with_command_line(sweep, num_samples=0)


def test_keys_set_on_the_command_line_are_not_searched() -> None:
    space = {**SPACE, "model.init_args.entropy_threshold": "uniform(0.1, 1.0)", "trainer.max_epochs": 5}
    sweep = parse_sweep({"space": space}, "s", "s")
    pinned_sweep, pinned = pin_overridden_keys(sweep, {"model.entropy_threshold", "trainer.max_epochs"})
    assert pinned == ["model.init_args.entropy_threshold"]
    assert list(pinned_sweep.space) == ["model.init_args.confidence_threshold"] and pinned_sweep.fixed == {}
    assert normalise_key("--data.init_args.labels_per_class") == "data.labels_per_class"
    with pytest.raises(UserInputError, match="every searched key"):
        pin_overridden_keys(sweep, {"model.confidence_threshold", "model.entropy_threshold"})


def test_absolute_paths_only_touch_path_keys(tmp_path: Path) -> None:
    config = {
        "data": {"init_args": {"root": "data/pbc", "cache_dir": "~/c", "train_transform": "weak", "split_file": None}},
        "model": {"init_args": {"pretrained_weights": "https://host/w.pth", "backbone_checkpoint": "/abs/x.ckpt"}},
        "trainer": {"logger": [{"init_args": {"save_dir": "runs"}}]},
    }
    out = absolute_paths(config, tmp_path)
    assert out["data"]["init_args"]["root"] == str(tmp_path / "data" / "pbc")
    assert out["data"]["init_args"]["cache_dir"] == str(Path("~/c").expanduser())
    assert out["data"]["init_args"]["train_transform"] == "weak" and out["data"]["init_args"]["split_file"] is None
    assert out["model"]["init_args"] == config["model"]["init_args"]  # URL and absolute path unchanged
    assert out["trainer"] == config["trainer"]  # outputs are placed per trial, not here


def test_cli_values_round_trip_through_fit_parser(tmp_path: Path) -> None:
    assert [cli_value(v) for v in (0.1, 1e-5, 20, True, None, [0.9, 0.999], "weak")] == [
        "0.1",
        "1e-05",
        "20",
        "true",
        "null",
        "[0.9, 0.999]",
        "weak",
    ]
    values = {
        "model.init_args.optimizer.init_args.lr": 1e-5,
        "model.init_args.optimizer.init_args.betas": [0.8, 0.99],
        "data.init_args.labels_per_class": 7,
        "data.init_args.train_transform": "strong",
    }
    config = resolve_config(["--config", str(QUICKSTART), *overrides(values)])
    optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
    assert optimizer["lr"] == 1e-5 and optimizer["betas"] == [0.8, 0.99]
    assert config["data"]["init_args"]["labels_per_class"] == 7
    assert config["data"]["init_args"]["train_transform"] == "strong"


def test_unknown_key_and_bad_value_are_one_line(tmp_path: Path) -> None:
    base = write_config(resolve_config(["--config", str(QUICKSTART)]), tmp_path / "base.yaml", "test")
    bad_key = parse_sweep({"space": SPACE}, "s", "s")  # quickstart's Supervised has no confidence_threshold
    with pytest.raises(UserInputError) as err:
        check_space_keys(base, bad_key, "sweep file s.yaml")
    text = str(err.value)
    assert text.startswith("sweep file s.yaml: space.model.init_args.confidence_threshold=0.7: ") and "\n" not in text
    assert "Option 'confidence_threshold' is not accepted" in text
    bad_value = parse_sweep({"space": {"data.init_args.labels_per_class": "choice([10, 'many'])"}}, "s", "s")
    with pytest.raises(UserInputError, match=r"space.data.init_args.labels_per_class=many: .*Given value: many"):
        check_space_keys(base, bad_value, "sweep file s.yaml")


def test_one_line_drops_union_noise() -> None:
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [A, B]\n'
        "  Errors:\n    - Problem with given class_path 'X':\n        Option 'foo' is not accepted\n"
        "    - Expected a <class 'NoneType'>\n  Given value type: <class 'NestedArg'>\n  Given value: NestedArg(k)"
    )
    assert one_line(message) == "Parser key \"model\": Problem with given class_path 'X': Option 'foo' is not accepted"


def test_trial_args_place_every_output_in_the_trial_dir(tmp_path: Path) -> None:
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "q"}}
    plan = TrialPlan(
        str(tmp_path / "base.yaml"), ["--trainer.max_epochs", "3"], str(tmp_path / "trials"), "val/acc", logger
    )
    args = trial_args(plan, {"model.init_args.lr": 0.1}, "51741978")  # an all-digit id, as Optuna's can be
    assert args[:5] == ["fit", "--config", str(tmp_path / "base.yaml"), "--trainer.max_epochs", "3"]
    pairs = dict(zip(args[5::2], args[6::2], strict=True))
    run_dir = tmp_path / "trials" / "51741978"
    assert pairs["--model.init_args.lr"] == "0.1" and pairs["--checkpoint.dirpath"] == str(run_dir / "checkpoints")
    assert pairs["--trainer.default_root_dir"] == str(run_dir)
    logger_args = yaml.safe_load(pairs["--trainer.logger"])["init_args"]
    assert logger_args == {"save_dir": str(tmp_path / "trials"), "name": "51741978", "version": ""}
    resolved = resolve_config(["--config", str(QUICKSTART), "--trainer.logger", pairs["--trainer.logger"]])
    assert resolved["trainer"]["logger"]["init_args"]["name"] == "51741978"  # still a str: the dir name
    assert resolved["trainer"]["logger"]["init_args"]["version"] == ""


def test_summarize_and_pick_the_best_trial() -> None:
    ok = summarize_trial("a", {"k": 1}, [0.5, 0.8, 0.7], [1, 2, 3], "max", 3, "/r/a")
    assert (ok.best, ok.last, ok.epochs, ok.status) == (0.8, 0.7, 3, "completed")
    stopped = summarize_trial("b", {"k": 2}, [0.9], [1], "max", 3, "/r/b")
    assert (stopped.best, stopped.status) == (0.9, "stopped_early")
    failed = summarize_trial("c", {"k": 3}, [], [], "max", 3, "/r/c", error="UserInputError: no")
    assert (failed.best, failed.last, failed.epochs, failed.status) == (None, None, 0, "error")
    nan = summarize_trial("d", {}, [math.nan, 0.2], [1, 2], "min", None, "/r/d")
    assert nan.best == 0.2 and nan.status == "completed"
    assert best_trial([ok, stopped, failed], "max") == stopped
    assert best_trial([ok, stopped], "min") == ok
    assert best_trial([failed], "max") is None
    assert [r.trial_id for r in rank([failed, ok, stopped], "max")] == ["b", "a", "c"]


def test_error_summary_finds_the_trial_error_under_rays_wrapping() -> None:
    text = (
        'ray.exceptions.RayTaskError(UserInputError): ray::run_trial() (pid=1)\n  File "x.py", line 3\n'
        "bloodcls.errors.UserInputError: sweep metric val/x is not logged by this run\n"
    )
    assert error_summary(text) == "UserInputError: sweep metric val/x is not logged by this run"
    assert error_summary("something odd\n") == "something odd"


def test_plots_one_png_per_parameter(tmp_path: Path) -> None:
    space = {
        "model.init_args.confidence_threshold": Distribution("uniform", 0.7, 0.99),
        "data.init_args.labels_per_class": Distribution("choice", options=(10, 20)),
        "model.init_args.pseudo_label_source": Distribution("choice", options=("model", "lp")),
        "model.init_args.optimizer.init_args.lr": Distribution("loguniform", 1e-4, 1e-2),
    }
    rows = [
        TrialRow("a", {"model.init_args.confidence_threshold": 0.8, "data.init_args.labels_per_class": 10,
                       "model.init_args.pseudo_label_source": "lp", "model.init_args.optimizer.init_args.lr": 1e-3},
                 0.7, 0.7, 2, "completed", "/r/a"),
        TrialRow("b", {"model.init_args.confidence_threshold": 0.9, "data.init_args.labels_per_class": 20,
                       "model.init_args.pseudo_label_source": "model", "model.init_args.optimizer.init_args.lr": 1e-4},
                 0.6, 0.5, 1, "stopped_early", "/r/b"),
        TrialRow("c", {}, None, None, 0, "error", "/r/c", "boom"),
    ]  # fmt: skip
    paths = plot_sweep(rows, space, "val/balanced_acc", tmp_path)
    assert [p.name for p in paths] == [
        "val_balanced_acc_vs_confidence_threshold.png",
        "val_balanced_acc_vs_labels_per_class.png",
        "val_balanced_acc_vs_pseudo_label_source.png",
        "val_balanced_acc_vs_lr.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_plot_helpers() -> None:
    assert short_names(["model.init_args.lr", "data.init_args.lr", "model.init_args.x"]) == {
        "model.init_args.lr": "model_lr",
        "data.init_args.lr": "data_lr",
        "model.init_args.x": "x",
    }
    assert means_per_value([(20, 0.6), (10, 0.5), (20, 0.8), (10, 0.7)]) == [(10, 0.6), (20, 0.7)]
    assert means_per_value([("b", 1.0), ("a", 0.0)]) == [("b", 1.0), ("a", 0.0)]


def test_grid_sweeps_and_the_threshold_figure(tmp_path: Path) -> None:
    raw = {
        "search": "grid",
        "space": {
            "model.init_args.confidence_threshold": "choice([0.8, 0.95])",
            "model.init_args.entropy_threshold": "choice([0.1, 0.3, 1.0])",
        },
    }
    sweep = parse_sweep(raw, "s", "s")
    assert sweep.search == "grid" and grid_size(sweep.space) == 6
    conf, ent = "model.init_args.confidence_threshold", "model.init_args.entropy_threshold"
    cells = [(0.8, 0.1, 0.5), (0.8, 0.1, 0.7), (0.95, 0.1, 0.4), (0.8, 1.0, 0.9), (0.95, 1.0, None)]
    rows = [
        TrialRow(f"t{i}", {conf: c, ent: e}, best, best, 1, "completed" if best else "error", f"/r/{i}")
        for i, (c, e, best) in enumerate(cells)
    ]
    # repeats of a cell are averaged; a cell that reported nothing is a gap, not a zero
    assert grid_lines(rows, conf, ent) == {0.1: [(0.8, pytest.approx(0.6)), (0.95, 0.4)], 1.0: [(0.8, 0.9)]}
    paths = plot_sweep(rows, sweep.space, "val/balanced_acc", tmp_path)
    assert paths[-1].name == "val_balanced_acc_grid_confidence_threshold_by_entropy_threshold.png"
    assert paths[-1].read_bytes()[:4] == b"\x89PNG"
