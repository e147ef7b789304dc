"""Weights & Biases for bloodcls runs, all in one place: a WandbLogger that goes offline by itself when no API key
is configured, run names / groups / tags derived from the config (``FixMatch-10lpc``), a config-saving callback that
also logs the resolved config and the run's files (config.yaml, split.csv, data_report.json, metrics.csv) to W&B,
and the test report's panels (per-class table, confusion matrix, plots, files).

Fit and evaluation are separate W&B runs: ``bloodcls fit`` logs a ``job_type=fit`` run; ``bloodcls test`` (or
``validate`` / ``predict``) on one of its checkpoints logs a new run ``<name>-test`` with ``job_type=test`` in the
same group, so the W&B UI shows them side by side, also for offline runs synced later.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import lightning as L
import numpy as np
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from bloodcls.distributed import run_dir
from bloodcls.errors import UserInputError
from bloodcls.evaluation.report import PER_CLASS_FIELDS

DEFAULT_HOST = "api.wandb.ai"
OFFLINE_MODES = ("offline", "dryrun")
RUN_FILES_AT_START = ("config.yaml", "split.csv", "data_report.json")
RUN_FILES_AT_END = ("metrics.csv", "hparams.yaml")  # still growing during the run: uploaded when it finishes
REPORT_PLOTS = {"confusion_matrix": "confusion_matrix.png", "roc": "roc.png", "calibration": "calibration.png"}
REPORT_FILES = ("metrics.json", "per_class.csv", "test_predictions.csv", *REPORT_PLOTS.values())
# Scalars of metrics.json that Lightning's test/* metrics do not already carry, under their W&B names.
REPORT_SCALARS = {"auroc": "test/macro_auroc", "nll": "test/nll", "ece": "test/ece", "n": "test/n_images"}


def has_wandb_credentials(env: Mapping[str, str], netrc_file: Path | None = None) -> bool:
    """Whether W&B could log in without asking: ``WANDB_API_KEY``, an identity token file, or a netrc entry for
    the W&B host (``wandb login`` writes one)."""
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL", f"https://{DEFAULT_HOST}")).hostname or DEFAULT_HOST
    path = netrc_file or Path(env.get("NETRC", str(Path.home() / ".netrc")))
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_offline(offline: bool | None, env: Mapping[str, str], netrc_file: Path | None = None) -> bool:
    """``offline`` as given; unset: follow ``WANDB_MODE`` when the user set it (W&B reads it itself), else go
    offline exactly when there are no credentials -- a run never blocks on a login prompt or a dead network."""
    if offline is not None:
        return offline
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"] in OFFLINE_MODES
    return not has_wandb_credentials(env, netrc_file)


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with bloodcls defaults. ``bloodcls fit`` fills ``name`` (strategy + labels per
    class), ``group`` (= name, so seeds group together), ``job_type`` and tags from the config when left unset.

    Args:
        project: W&B project.
        name: run name (default from the config, e.g. ``FixMatch-10lpc``).
        group: run group (default: the run name; test runs of a checkpoint join their fit run's group).
        job_type: ``fit`` / ``test`` / ``validate`` / ``predict`` by default.
        tags: run tags; the strategy, backbone, label budget and seed are added.
        notes, entity: as in ``wandb.init``.
        save_dir: where the ``wandb/`` run directories go (offline runs: ``wandb/offline-run-*``).
        offline: ``None`` = offline when ``WANDB_MODE`` says so or no API key is configured.
        log_model: upload checkpoints as artifacts (``True`` at the end, ``all`` as they are written; needs online).
        id: resume a run with this id.
        version: with a CSVLogger beside it (bloodcls's configs), the run folder's version: ``bloodcls fit`` moves
            it to the CSV logger, so ``--trainer.logger.init_args.version X`` names the run folder whichever
            logger the override lands on; alone, the W&B run id (as Lightning's ``version``).
    """

    def __init__(
        self,
        project: str = "bloodcls",
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        entity: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        log_model: bool | Literal["all"] = False,
        id: str | None = None,
        version: str | None = None,
    ) -> None:
        resolved = resolve_offline(offline, os.environ)
        if resolved and log_model:
            raise UserInputError(
                f"trainer.logger WandbLogger: log_model={log_model} needs an online run, but W&B is offline "
                "(no API key: run `wandb login` or set WANDB_API_KEY; or set log_model: false)"
            )
        Path(save_dir).mkdir(parents=True, exist_ok=True)  # wandb falls back to a temp dir when it is missing
        init: dict[str, Any] = {"group": group, "job_type": job_type, "tags": tags, "notes": notes, "entity": entity}
        super().__init__(
            name=name,
            save_dir=save_dir,
            offline=resolved,
            project=project,
            log_model=log_model,
            id=id or version,
            **{k: v for k, v in init.items() if v is not None},
        )
        # Lightning always passes anonymous= (None here); wandb warns that the setting "has no effect" on every run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def wandb_loggers(loggers: Iterable[Logger]) -> list[LightningWandbLogger]:
    """The trainer's W&B loggers: Lightning's, and ours that subclass it."""
    return [logger for logger in loggers if isinstance(logger, LightningWandbLogger)]


# ---------------------------------------------------------------------- defaults from the CLI config
def _get(namespace: Any, key: str, default: Any = None) -> Any:
    value = namespace.get(key, default) if hasattr(namespace, "get") else default
    return default if value is None else value


def logger_specs(config: Any) -> list[Any]:
    """The ``trainer.logger`` entries of a parsed config that are class specs (one, a list, or none)."""
    logger = _get(_get(config, "trainer", {}), "logger")
    items = logger if isinstance(logger, list) else [logger]
    return [item for item in items if hasattr(item, "get") and item.get("class_path")]


def is_wandb_spec(spec: Any) -> bool:
    return str(spec.get("class_path", "")).endswith("WandbLogger")


def default_run_name(config: Any) -> str:
    """``<Strategy>-<budget>``: ``FixMatch-10lpc``, ``Supervised-5pct``, ``Supervised-all``."""
    strategy = str(_get(_get(config, "model", {}), "class_path", "Classifier")).rsplit(".", 1)[-1]
    data_args = _get(_get(config, "data", {}), "init_args", {})
    per_class = _get(data_args, "labels_per_class")
    fraction = _get(data_args, "labeled_fraction")
    if per_class is not None:
        return f"{strategy}-{per_class}lpc"
    if fraction is not None:
        return f"{strategy}-{round(100 * float(fraction), 2):g}pct"
    return f"{strategy}-all"


def default_tags(config: Any) -> list[str]:
    """Strategy, backbone, label budget and seed, for filtering runs in the W&B UI."""
    model_args = _get(_get(config, "model", {}), "init_args", {})
    strategy, budget = default_run_name(config).split("-", 1)
    tags = [strategy, budget, f"seed{_get(config, 'seed_everything', 0)}"]
    backbone = _get(model_args, "backbone")
    return tags + ([str(backbone)] if backbone else [])


def route_run_version(config: Any) -> None:
    """A ``version`` that landed on a W&B logger (``--trainer.logger.init_args.version`` reaches the last logger of a
    list, the W&B one once configs/loggers/wandb.yaml is composed) names the run folder: it moves to the CSV logger."""
    specs = logger_specs(config)
    csv = [s for s in specs if "CSVLogger" in str(s.get("class_path")) and s.get("init_args") is not None]
    for spec in specs:
        args = spec.get("init_args")
        if not is_wandb_spec(spec) or args is None or args.get("version") in (None, "") or not csv:
            continue
        csv[0].init_args.version = args.version
        args.version = None


def fill_wandb_defaults(config: Any, subcommand: str | None) -> None:
    """Fill unset name / group / job_type / tags of every W&B logger in ``config`` (in place, before
    instantiation, so the saved config.yaml carries them and ``bloodcls test`` on the run finds them)."""
    route_run_version(config)
    job = subcommand or "fit"
    for spec in logger_specs(config):
        args = spec.get("init_args")
        if not is_wandb_spec(spec) or args is None:
            continue
        name = args.get("name") or default_run_name(config)
        if "group" in args and not args.get("group"):
            args.group = name
        if "job_type" in args and args.get("job_type") in (None, "fit"):
            args.job_type = job
        if job != "fit" and not name.endswith(f"-{job}"):
            name = f"{name}-{job}"
        args.name = name
        if "tags" in args:
            tags = list(args.get("tags") or [])
            args.tags = tags + [t for t in default_tags(config) if t not in tags]


# ---------------------------------------------------------------------- config and run files on W&B
def save_quietly(run: Any, path: Path, base_path: Path, policy: Literal["now", "end"]) -> None:
    """``run.save`` without wandb's "Symlinked 1 file into the W&B run directory" line, printed for every file."""
    import wandb

    termwarn = wandb.termwarn

    def quiet(string: str, *args: Any, **kwargs: Any) -> None:
        if "into the W&B run directory" not in string:
            termwarn(string, *args, **kwargs)

    wandb.termwarn = quiet
    try:
        run.save(str(path), base_path=str(base_path), policy=policy)
    finally:
        wandb.termwarn = termwarn


class SaveConfigToLoggers(SaveConfigCallback):
    """Lightning's config.yaml next to the run, plus -- with a W&B logger -- the resolved config in the W&B run's
    config (under ``config``) and the run's files in its Files tab."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # trainer.log_dir is a broadcast under DDP; save_config (rank 0 only) must not ask for it.
        self.run_dir: Path | None = run_dir(trainer)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = wandb_loggers(trainer.loggers)
        if not loggers:
            return
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
        for logger in loggers:
            logger.experiment.config.update({"config": resolved}, allow_val_change=True)
        self._save_files(trainer, RUN_FILES_AT_START[:1], "now")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # split.csv / data_report.json exist by now: RunFiles writes them in on_fit_start, which comes first.
        if trainer.is_global_zero:
            self._save_files(trainer, RUN_FILES_AT_START[1:], "now")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # W&B expands the names now and uploads the contents when the run finishes
            self._save_files(trainer, RUN_FILES_AT_END, "end")

    def _save_files(self, trainer: L.Trainer, names: tuple[str, ...], policy: Literal["now", "end"]) -> None:
        directory = getattr(self, "run_dir", None)  # set in setup; absent when fit never got that far
        if directory is None:
            return
        for logger in wandb_loggers(trainer.loggers):
            for name in names:
                path = directory / name
                if path.is_file():
                    save_quietly(logger.experiment, path, directory, policy)


# ---------------------------------------------------------------------- the test report on W&B
def per_class_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """metrics.json's per-class entries as table rows in ``PER_CLASS_FIELDS`` order (undefined AUROC: None)."""
    return [[row[key] for key in PER_CLASS_FIELDS] for row in metrics["per_class"]]


def log_test_report(
    loggers: Iterable[Logger],
    out_dir: Path,
    metrics: dict[str, Any],
    targets: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str],
) -> None:
    """Log a written test report (``out_dir``) to every W&B logger; rank 0 only, like the report itself."""
    targets_loggers = wandb_loggers(loggers)
    if not targets_loggers:
        return
    import wandb  # only now: a run without a WandbLogger never imports wandb

    payload: dict[str, Any] = {
        "test/per_class": wandb.Table(columns=list(PER_CLASS_FIELDS), data=per_class_rows(metrics)),
        "test/confusion_matrix": wandb.plot.confusion_matrix(
            y_true=targets.tolist(), preds=preds.tolist(), class_names=list(class_names)
        ),
    }
    for key, file in REPORT_PLOTS.items():
        if (out_dir / file).is_file():
            payload[f"test/plots/{key}"] = wandb.Image(str(out_dir / file))
    scalars = {name: metrics[key] for key, name in REPORT_SCALARS.items() if metrics.get(key) is not None}
    for logger in targets_loggers:
        run = logger.experiment
        run.log({**payload, **scalars})
        run.summary.update(scalars)
        # Files keep their place in the run directory (test/metrics.json, ...); offline runs upload on `wandb sync`.
        for file in REPORT_FILES:
            if (out_dir / file).is_file():
                save_quietly(run, out_dir / file, out_dir.parent, "now")


def log_html_report(loggers: Iterable[Logger], path: Path, gallery: Sequence[tuple[str, np.ndarray]]) -> None:
    """An HTML report as a ``wandb.Html`` panel and file, and the CAM gallery's (kind, image | CAM) pairs; rank 0."""
    targets_loggers = wandb_loggers(loggers)
    if not targets_loggers:
        return
    import wandb

    stage = "predict" if path.name.startswith("predict") else "test"
    payload: dict[str, Any] = {f"{stage}/html_report": wandb.Html(path.read_text(encoding="utf-8"), inject=False)}
    for kind in ("correct", "mistake"):
        pairs = [pair for k, pair in gallery if k == kind]
        if pairs:
            payload[f"{stage}/cam_gallery/{kind}"] = [wandb.Image(pair) for pair in pairs]
    for logger in targets_loggers:
        logger.experiment.log(payload)
        save_quietly(logger.experiment, path, path.parent.parent, "now")
