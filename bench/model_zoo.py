"""Model-zoo benchmark: every network of ``configs/models/`` and the classical baseline on PBC's test split.

Each model runs through the real CLI -- ``bloodcls fit`` with the base config (default
``configs/pbc/resnet18_64px.yaml``: its split, optimiser, schedule and augmentation) followed by the model's fragment
``configs/models/<model>.yaml``, a fixed epoch budget (``--max-epochs``), then ``bloodcls test`` on the checkpoint
chosen on validation -- so every model sees the same deduplicated, stratified split and the numbers are what a user
gets. The classical baseline (``baseline_svm``, ``baseline_rf``) runs ``bloodcls baseline`` on the same config.

Image size: 64 px (the base config) unless a model needs more, in which case its fragment's size (inception_v3 and
bloodcls_hybrid_inception_xception: 128 px); always within 64-128 px (``--image-size N`` forces one size, raised to a
model's minimum). Measured per model, besides accuracy / balanced accuracy / macro-F1 on the test split:
parameters, the fit's wall time, inference images/s (batch 256, eval mode, after warm-up, on the training
device and precision) and training images/s (optimizer steps at the config's batch size), from which
``est_epoch_s`` (one full training epoch plus validation) is estimated -- the number to plan a grid with.

Results go to ``<out>/model_zoo.csv`` (one row per model, appended as models finish, so an interrupted run resumes)
and ``<out>/model_zoo.md`` (the table, with the published PBC accuracies beside ours).

    python bench/model_zoo.py --max-epochs 15                                   # the full grid (hours on a CPU)
    python bench/model_zoo.py --models resnet18 bloodcls_cnn7 baseline_svm --max-epochs 1 \\
        --limit-train-batches 2 --limit-val-batches 2 --limit-test-batches 2  # smoke run (rows marked "smoke")
    python bench/model_zoo.py --accelerator gpu --precision 16-mixed --max-epochs 15  # unchanged on a GPU
    python bench/model_zoo.py --speed-only --speed-batches 1    # no training: params, images/s, epoch estimates
    python bench/model_zoo.py --time-budget-min 3 --precision bf16-mixed --workers 0   # the same wall time each

``--time-budget-min T`` gives every deep model the same training wall time instead of the same epochs: the untrained
model's measured speed estimates its epoch time (training + validation), and the fit gets as many whole epochs as fit
in T minutes (at most ``--max-epochs``), or one epoch over the fraction of the training batches that fits when a
whole epoch does not (the ``epochs`` column then reads e.g. 0.35). The LR warm-up is shortened to a fifth of such a
short run, so that a one-epoch budget still decays its learning rate.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "configs" / "models"
BASELINES = ("baseline_svm", "baseline_rf")
SIZE_RANGE = (64, 128)  # px: the comparison's resolutions (issue 5)
# Published PBC test accuracies (%) quoted in issue 5 as anchors. They come from other splits, other resolutions
# and ImageNet-pretrained networks, so they are context for our numbers, not a like-for-like comparison.
PUBLISHED: dict[str, float] = {
    "vgg16": 92.8,
    "resnet50": 94.72,
    "densenet201": 94.26,
    "mobilenetv2_100": 92.01,
    "inception_v3": 93.1,
    "bloodcls_hybrid_inception_xception": 98.51,
}
COLUMNS = (
    "model",
    "backbone",
    "image_size",
    "epochs",
    "budget_min",
    "smoke",
    "acc",
    "balanced_acc",
    "macro_f1",
    "n_test",
    "params_m",
    "gflops",
    "fit_wall_s",
    "test_wall_s",
    "train_img_s",
    "infer_img_s",
    "est_epoch_s",
    "n_train",
    "n_val",
    "accelerator",
    "precision",
    "device",
    "published_acc",
    "status",
)
SPEED_COLUMNS = (
    "model",
    "backbone",
    "image_size",
    "params_m",
    "gflops",
    "train_img_s",
    "infer_img_s",
    "est_epoch_s",
    "n_train",
    "n_val",
)
PBC_SPLIT = (10127, 2171)  # train / val images of configs/pbc/resnet18_64px.yaml's split, for --speed-only


# ---------------------------------------------------------------------------------------------- configs
def bloodcls_exe() -> str:
    exe = Path(sys.executable).parent / "bloodcls"
    return str(exe) if exe.exists() else "bloodcls"


def available_models() -> list[str]:
    return [*BASELINES, *sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))]


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _get(cfg: dict[str, Any], *keys: str) -> Any:
    """``cfg[k1][k2]...``, or None when a level is missing or empty."""
    value: Any = cfg
    for key in keys:
        value = (value.get(key) or {}) if isinstance(value, dict) else {}
    return value or None


def image_size_for(model: str, base_size: int, forced: int | None) -> int:
    """The model's resolution: ``forced``, else the base size unless its fragment asks for more; within 64-128 px
    and never below the network's minimum input size."""
    lo, hi = SIZE_RANGE
    if model in BASELINES:
        return forced or max(lo, base_size)
    fragment = _get(_yaml(MODEL_DIR / f"{model}.yaml"), "data", "init_args", "image_size")
    size = forced or max(base_size, int(fragment or 0))
    size = min(max(size, lo), hi) if forced is None else size
    return max(size, min_input_size(backbone_of(model)))


def backbone_of(model: str) -> str:
    return str(_get(_yaml(MODEL_DIR / f"{model}.yaml"), "model", "init_args", "backbone") or model)


def min_input_size(backbone: str) -> int:
    import timm

    import bloodcls.models  # noqa: F401  (registers the bloodcls networks)

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is not None and cfg.min_input_size:
        return int(cfg.min_input_size[-1])
    return 75 if backbone == "inception_v3" else 32


# ---------------------------------------------------------------------------------------------- running
def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` in the repository with its output in ``log``; returns wall seconds, raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "120"}
    start = time.perf_counter()
    with log.open("w") as fh:
        fh.write(" ".join(cmd) + "\n\n")
        fh.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit {code}: {tail[0][:300]} (log: {log})")
    return seconds


def _limits(args: argparse.Namespace) -> list[str]:
    out = []
    for stage in ("train", "val", "test"):
        value = getattr(args, f"limit_{stage}_batches")
        if value is not None:
            out += [f"--trainer.limit_{stage}_batches", str(value)]
    return out


def _is_smoke(args: argparse.Namespace) -> bool:
    return any(getattr(args, f"limit_{s}_batches") is not None for s in ("train", "val", "test"))


def run_version(args: argparse.Namespace, size: int) -> str:
    budget = f"_t{args.time_budget_min:g}min" if args.time_budget_min else f"_e{args.max_epochs}"
    return f"{size}px{budget}_{args.precision}" + ("_smoke" if _is_smoke(args) else "")


@dataclass(frozen=True)
class BudgetPlan:
    """How a model spends a fixed training wall time: ``max_epochs`` epochs over ``train_fraction`` of the training
    batches each (1.0 = whole epochs), warm-up ``warmup_epochs``; ``epochs`` is the planned passes over the data."""

    max_epochs: int
    train_fraction: float
    warmup_epochs: float
    epochs: float

    def fit_args(self) -> list[str]:
        out = [
            "--trainer.max_epochs",
            str(self.max_epochs),
            "--model.init_args.warmup_epochs",
            f"{self.warmup_epochs:g}",
        ]
        if self.train_fraction < 1.0:
            out += ["--trainer.limit_train_batches", f"{self.train_fraction:.4f}"]
        return out


MIN_TRAIN_FRACTION = 0.05  # a model too slow for 5 % of an epoch in the budget overruns it rather than not train


def plan_budget(
    budget_s: float,
    n_train: int,
    n_val: int,
    train_ips: float,
    infer_ips: float,
    max_epochs: int,
    warmup_epochs: float,
) -> BudgetPlan:
    """Epochs of a model that trains at ``train_ips`` and validates at ``infer_ips`` images/s within ``budget_s``.

    An epoch costs ``n_train / train_ips + n_val / infer_ips`` seconds (validation runs after every epoch). Whole
    epochs when at least one fits, capped at ``max_epochs``; otherwise one epoch over the fraction of the training
    batches that fits beside one validation pass (never under ``MIN_TRAIN_FRACTION``). The warm-up is capped at a
    fifth of the run so that a short run still reaches its cosine decay.
    """
    train_s, val_s = n_train / train_ips, n_val / infer_ips
    whole = int(budget_s // (train_s + val_s))
    if whole >= 1:
        epochs = min(whole, max_epochs)
        return BudgetPlan(epochs, 1.0, min(warmup_epochs, 0.2 * epochs), float(epochs))
    fraction = min(1.0, max(MIN_TRAIN_FRACTION, (budget_s - val_s) / train_s))
    return BudgetPlan(1, fraction, min(warmup_epochs, 0.2), round(fraction, 3))


def fit_and_test(
    args: argparse.Namespace, model: str, size: int, plan: BudgetPlan | None = None
) -> tuple[Path, float, float]:
    """``bloodcls fit`` then ``bloodcls test`` on the best-on-validation checkpoint; (run dir, fit s, test s)."""
    runs = Path(args.out).resolve() / "runs"
    version = run_version(args, size)
    trainer = [
        "--trainer.accelerator",
        args.accelerator,
        "--trainer.precision",
        args.precision,
        *_limits(args),
    ]
    fit = [
        bloodcls_exe(),
        "fit",
        "--config",
        str(REPO / args.base),
        "--config",
        str(MODEL_DIR / f"{model}.yaml"),
        "--trainer.max_epochs",
        str(args.max_epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(runs),
        "--trainer.logger.init_args.name",
        model,
        "--trainer.logger.init_args.version",
        version,
        "--data.init_args.image_size",
        str(size),
        *trainer,
        *(plan.fit_args() if plan else []),
    ]
    if args.data_root:
        fit += ["--data.init_args.root", args.data_root]
    if args.workers is not None:
        fit += ["--data.init_args.num_workers", str(args.workers)]
    run_dir = runs / model / version
    fit_s = _run(fit, run_dir / "fit.log")
    best = run_dir / "checkpoints" / "best.ckpt"
    test = [bloodcls_exe(), "test", "--ckpt_path", str(best), "--trainer.enable_progress_bar", "false", *trainer]
    if args.data_root:
        test += ["--data.init_args.root", args.data_root]
    test_s = _run(test, run_dir / "test.log")
    return run_dir, fit_s, test_s


def split_counts(run_dir: Path) -> dict[str, int]:
    with (run_dir / "split.csv").open() as fh:
        subsets = [row["subset"] for row in csv.DictReader(fh)]
    return {name: subsets.count(name) for name in ("train", "val", "test")}


# ---------------------------------------------------------------------------------------------- speed
def _device(accelerator: str) -> Any:
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def device_name(accelerator: str) -> str:
    import torch

    device = _device(accelerator)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} (torch threads {torch.get_num_threads()})"
    )


def _autocast(device: Any, precision: str) -> Any:
    import torch

    if precision.startswith("16-mixed") or precision == "16":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _timed(device: Any, out: list[float]) -> Iterator[None]:
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    out.append(time.perf_counter() - start)


def load_model(run_dir: Path, device: Any) -> Any:
    """The strategy module of a run, restored from its best checkpoint (class from the run's config.yaml)."""
    class_path = _yaml(run_dir / "config.yaml")["model"]["class_path"]
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location=device)


def measure_speed(
    model: Any, size: int, device: Any, precision: str, batches: int, train_batch: int
) -> tuple[float, float]:
    """(training images/s at ``train_batch``, inference images/s at batch 256): median over ``batches`` timed
    batches, each after one warm-up batch.

    Inputs are uint8 images as the loaders deliver them (normalisation runs inside the model, on the device).
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, generator=gen).to(device)
    model.to(device)
    model.eval()
    times: list[float] = []
    with torch.inference_mode(), _autocast(device, precision):
        for _ in range(batches + 1):
            with _timed(device, times):
                model(images)
    infer = 256 / statistics.median(times[1:])  # the median resists spikes from other jobs on a shared machine

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = images[:train_batch], torch.randint(0, model.num_classes, (train_batch,), generator=gen).to(device)
    times = []
    for _ in range(batches + 1):
        with _timed(device, times):
            with _autocast(device, precision):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    train = train_batch / statistics.median(times[1:])
    return train, infer


def recurrent_flops(rnn: Any, seq_len: int) -> int:
    """Multiply-add FLOPs (x2) of an nn.LSTM / GRU / RNN over ``seq_len`` steps for one sequence: per step, layer
    and direction ``2 * gates * hidden * (input + hidden)``; the fused kernels hide them from FlopCounterMode."""
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    dirs = 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else rnn.hidden_size * dirs
        total += 2 * gates * rnn.hidden_size * (inputs + rnn.hidden_size) * seq_len * dirs
    return total


def forward_gflops(model: Any, size: int) -> float:
    """GFLOPs of one image's forward pass: torch's FlopCounterMode (convolutions, matrix products) plus the
    recurrent layers it cannot see. Independent of machine load, unlike images/s on a shared CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    calls: list[tuple[Any, torch.Tensor]] = []

    def record_rnn(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        calls.append((module, inputs[0]))  # (B, T, F) batch_first or (T, B, F)

    hooks = [m.register_forward_hook(record_rnn) for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    was_training = model.training
    model.cpu().eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    extra = 0
    for module, x in calls:  # GRU decomposes into counted matmuls on CPU, LSTM's fused kernel does not
        with FlopCounterMode(display=False) as alone, torch.no_grad():
            module(x)
        if alone.get_total_flops() == 0:
            extra += recurrent_flops(module, int(x.shape[1] if module.batch_first else x.shape[0]))
    return (counter.get_total_flops() + extra) / 1e9


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.net.parameters())


# ---------------------------------------------------------------------------------------------- one row
def budget_plan(args: argparse.Namespace, model: str) -> tuple[BudgetPlan, dict[str, Any]]:
    """The plan for ``--time-budget-min`` from the untrained model's speed (the speed row is kept for the table:
    training does not change a network's speed)."""
    speed = speed_row(args, model)
    base_init = _get(_yaml(REPO / args.base), "model", "init_args") or {}
    n_train, n_val = args.epoch_images
    plan = plan_budget(
        60 * args.time_budget_min,
        n_train,
        n_val,
        speed["train_img_s"],
        speed["infer_img_s"],
        args.max_epochs,
        float(base_init.get("warmup_epochs", 0.0)),
    )
    print(f"model_zoo: {model}: {speed['est_epoch_s']} s per epoch -> {plan}", flush=True)
    return plan, speed


def deep_row(args: argparse.Namespace, model: str) -> dict[str, Any]:
    import torch

    base_size = int(_get(_yaml(REPO / args.base), "data", "init_args", "image_size") or 64)
    size = image_size_for(model, base_size, args.image_size)
    plan, speed = budget_plan(args, model) if args.time_budget_min else (None, None)
    run_dir, fit_s, test_s = fit_and_test(args, model, size, plan)
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    counts = split_counts(run_dir)
    device = _device(args.accelerator)
    net = load_model(run_dir, device)
    train_batch = int(_get(_yaml(run_dir / "config.yaml"), "data", "init_args", "batch_size") or 64)
    gflops = forward_gflops(net, size)
    if speed is None:
        train_ips, infer_ips = measure_speed(net, size, device, args.precision, args.speed_batches, train_batch)
    else:
        train_ips, infer_ips = speed["train_img_s"], speed["infer_img_s"]
    params = count_parameters(net)
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "model": model,
        "backbone": backbone_of(model),
        "image_size": size,
        "epochs": plan.epochs if plan else args.max_epochs,
        "budget_min": f"{args.time_budget_min:g}" if args.time_budget_min else "",
        "smoke": _smoke_key(args, model),
        "acc": metrics["acc"],
        "balanced_acc": metrics["balanced_acc"],
        "macro_f1": metrics["macro_f1"],
        "n_test": metrics["n"],
        "params_m": round(params / 1e6, 3),
        "gflops": round(gflops, 3),
        "fit_wall_s": round(fit_s, 1),
        "test_wall_s": round(test_s, 1),
        "train_img_s": round(train_ips, 1),
        "infer_img_s": round(infer_ips, 1),
        "est_epoch_s": round(counts["train"] / train_ips + counts["val"] / infer_ips, 1),
        "n_train": counts["train"],
        "n_val": counts["val"],
    }


def baseline_row(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """``bloodcls baseline`` on the base config: its wall time is features of every image plus the grid search;
    its inference speed is the feature-extraction rate (the classifier's own prediction time is negligible)."""
    method = model.removeprefix("baseline_")
    base_size = int(_get(_yaml(REPO / args.base), "data", "init_args", "image_size") or 64)
    size = image_size_for(model, base_size, args.image_size)
    out_dir = Path(args.out).resolve() / "runs" / model / f"{size}px"
    cmd = [
        bloodcls_exe(),
        "baseline",
        "--config",
        str(REPO / args.base),
        "--method",
        method,
        "--image_size",
        str(size),
        "--output",
        str(out_dir),
    ]
    if args.data_root:
        cmd += ["--data.init_args.root", args.data_root]
    if args.baseline_workers is not None:
        cmd += ["--workers", str(args.baseline_workers)]
    wall = _run(cmd, out_dir / "baseline.log")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    run = metrics["run"]
    n_images = run["n_train"] + run["n_val"] + metrics["n"]
    return {
        "model": model,
        "backbone": f"{method} on hand-crafted features",
        "image_size": size,
        "epochs": "",
        "smoke": _smoke_key(args, model),
        "acc": metrics["acc"],
        "balanced_acc": metrics["balanced_acc"],
        "macro_f1": metrics["macro_f1"],
        "n_test": metrics["n"],
        "params_m": "",
        "fit_wall_s": round(wall, 1),
        "test_wall_s": "",
        "train_img_s": "",
        "infer_img_s": round(n_images / max(run["feature_seconds"], 1e-9), 1),
        "est_epoch_s": "",
        "n_train": run["n_train"],
        "n_val": run["n_val"],
    }


def build_model(args: argparse.Namespace, model: str) -> Any:
    """A fresh (untrained) strategy module as ``bloodcls fit`` would build it from the base config + fragment."""
    base, fragment = _yaml(REPO / args.base), _yaml(MODEL_DIR / f"{model}.yaml")
    class_path = _get(fragment, "model", "class_path") or _get(base, "model", "class_path")
    init = {**(_get(base, "model", "init_args") or {}), **(_get(fragment, "model", "init_args") or {})}
    kwargs = {k: init[k] for k in ("backbone", "backbone_kwargs", "channels_last", "drop_rate") if k in init}
    module, name = str(class_path).rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(num_classes=args.num_classes, **kwargs)


def speed_row(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """``--speed-only``: parameters and images/s of an untrained model, and the epoch time they imply for a
    training split of ``--epoch-images`` images -- to plan a grid before running it."""
    import torch

    base_size = int(_get(_yaml(REPO / args.base), "data", "init_args", "image_size") or 64)
    size = image_size_for(model, base_size, args.image_size)
    device = _device(args.accelerator)
    torch.manual_seed(0)
    net = build_model(args, model)
    batch = int(_get(_yaml(REPO / args.base), "data", "init_args", "batch_size") or 64)
    gflops = forward_gflops(net, size)
    train_ips, infer_ips = measure_speed(net, size, device, args.precision, args.speed_batches, batch)
    n_train, n_val = args.epoch_images
    return {
        "model": model,
        "backbone": backbone_of(model),
        "image_size": size,
        "params_m": round(count_parameters(net) / 1e6, 3),
        "gflops": round(gflops, 3),
        "train_img_s": round(train_ips, 1),
        "infer_img_s": round(infer_ips, 1),
        "est_epoch_s": round(n_train / train_ips + n_val / infer_ips, 1),
        "n_train": n_train,
        "n_val": n_val,
    }


def run_speed_only(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "model_zoo_speed.csv"
    columns = (*SPEED_COLUMNS, "accelerator", "precision", "device")
    device = device_name(args.accelerator)
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for model in args.models:
            if model in BASELINES:
                continue
            row = speed_row(args, model) | {
                "accelerator": args.accelerator,
                "precision": args.precision,
                "device": device,
            }
            print("model_zoo: " + json.dumps(row), flush=True)
            writer.writerow(row)
            fh.flush()
    print(f"model_zoo: wrote {table}")


# ---------------------------------------------------------------------------------------------- tables
def _pct(value: str) -> str:
    return f"{100 * float(value):.2f}" if value not in ("", None) else "—"


def _duration(seconds: str) -> str:
    if seconds in ("", None):
        return "—"
    s = float(seconds)
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def budget_note(rows: list[dict[str, str]]) -> list[str]:
    """The sentence that says which rows ran on a wall-time budget (``--time-budget-min``) rather than epochs."""
    budgets = sorted({r.get("budget_min") or "" for r in rows if r.get("budget_min")})
    if not budgets:
        return []
    return [
        "",
        f"Budget: {' / '.join(budgets)} min of training wall time per model (the whole epochs that fit, estimated from "
        "the untrained model's measured speed; a model too slow for one epoch trains one epoch over the fraction of "
        "the training batches that fits: the epochs column).",
    ]


def write_markdown(rows: list[dict[str, str]], path: Path, args: argparse.Namespace) -> None:
    """The README table: ours on PBC's test split with the published accuracy beside it."""
    header = (
        "| model | px | params (M) | GFLOPs | epochs | fit time | train img/s | inference img/s | accuracy "
        "| balanced acc. | macro-F1 | published acc. |"
    )
    lines = [
        f"Test split of `{args.base}` (deduplicated and stratified as that config says); every model trained with "
        "that config's recipe from scratch; accuracies in %; fit time is the whole `bloodcls fit` (data loading, "
        "validation every epoch); inference: batch 256, eval mode, after warm-up. Rows marked (smoke) ran with "
        "limited batches and are not results.",
        *budget_note(rows),
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['model']} | {r.get('image_size', '')} | failed: {r['status']} |||||||||")
            continue
        smoke = " (smoke)" if r["smoke"] == "1" else ""
        published = f"{float(r['published_acc']):.2f}" if r["published_acc"] else ""
        lines.append(
            f"| {r['model']}{smoke} | {r['image_size']} | {r['params_m'] or '—'} | {r['gflops'] or '—'} "
            f"| {r['epochs'] or '—'} "
            f"| {_duration(r['fit_wall_s'])} | {r.get('train_img_s') or '—'} | {r['infer_img_s'] or '—'} "
            f"| {_pct(r['acc'])} "
            f"| {_pct(r['balanced_acc'])} | {_pct(r['macro_f1'])} | {published} |"
        )
    devices = sorted({f"{r['device']} ({r['accelerator']}, {r['precision']})" for r in rows if r.get("device")})
    lines += ["", "Device: " + "; ".join(devices) if devices else ""]
    path.write_text("\n".join(lines).rstrip() + "\n")


# ---------------------------------------------------------------------------------------------- main
def batches(text: str) -> int | float:
    """Lightning's limit_*_batches: an integer is a batch count, a float in (0, 1] a fraction of the loader."""
    return int(text) if text.isdigit() else float(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=None, help="configs/models stems and/or baseline_svm baseline_rf"
    )
    parser.add_argument("--base", default="configs/pbc/resnet18_64px.yaml", help="full config giving data and split")
    parser.add_argument("--max-epochs", type=int, default=15, help="the fixed epoch budget of every deep model")
    parser.add_argument(
        "--time-budget-min",
        type=float,
        default=None,
        help="the same training wall time for every deep model instead of the same epochs (--max-epochs caps it)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="force one resolution for every model")
    parser.add_argument("--limit-train-batches", type=batches, default=None, help="smoke runs only")
    parser.add_argument("--limit-val-batches", type=batches, default=None, help="smoke runs only")
    parser.add_argument(
        "--limit-test-batches", type=batches, default=None, help="smoke runs only (metrics on a subset)"
    )
    parser.add_argument("--accelerator", default="auto", help="cpu | gpu | auto (Lightning's --trainer.accelerator)")
    parser.add_argument("--precision", default="32-true", help="32-true | 16-mixed | bf16-mixed")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: the config's)")
    parser.add_argument("--baseline-workers", type=int, default=None, help="feature-extraction threads")
    parser.add_argument("--speed-batches", type=int, default=None, help="timed batches (default 3 on CPU, 20 on GPU)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="no training: parameters and images/s of each untrained model, and the epoch time they imply "
        "(writes model_zoo_speed.csv)",
    )
    parser.add_argument(
        "--epoch-images",
        type=int,
        nargs=2,
        default=PBC_SPLIT,
        metavar=("TRAIN", "VAL"),
        help="split sizes for --speed-only's epoch estimate (default: PBC's split)",
    )
    parser.add_argument("--num-classes", type=int, default=8, help="classes of --speed-only's models (PBC: 8)")
    parser.add_argument("--out", default="bench/results/model_zoo")
    args = parser.parse_args(argv)
    known = available_models()
    args.models = args.models or known
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: {' '.join(known)}")
    if args.max_epochs < 1:
        parser.error("--max-epochs must be >= 1")
    if args.time_budget_min is not None and args.time_budget_min <= 0:
        parser.error("--time-budget-min must be > 0")
    if args.speed_batches is None:
        args.speed_batches = 20 if _device(args.accelerator).type == "cuda" else 3
    return args


def open_table(table: Path) -> list[dict[str, str]]:
    """The rows so far; creates the file, and rewrites one written with other columns (an older version of this
    script) so appended rows line up with the header."""
    rows: list[dict[str, str]] = []
    if table.exists():
        with table.open() as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            if tuple(reader.fieldnames or ()) == COLUMNS:
                return rows
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _smoke_key(args: argparse.Namespace, model: str) -> str:
    """The ``smoke`` column of a row: the baseline has no batches to limit, so its rows are always full runs."""
    return "1" if _is_smoke(args) and model not in BASELINES else "0"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.speed_only:
        run_speed_only(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "model_zoo.csv"
    done = {
        (r["model"], r["budget_min"] or r["epochs"], r["smoke"], r["accelerator"], r["precision"])
        for r in open_table(table)
        if r["status"] == "ok"
    }
    device = device_name(args.accelerator)
    for model in args.models:
        budget = f"{args.time_budget_min:g}" if args.time_budget_min else str(args.max_epochs)
        epochs = "" if model in BASELINES else budget
        if (model, epochs, _smoke_key(args, model), args.accelerator, args.precision) in done:
            print(f"model_zoo: {model} already in {table}, skipped", flush=True)
            continue
        print(f"model_zoo: {model} ...", flush=True)
        try:
            row = baseline_row(args, model) if model in BASELINES else deep_row(args, model)
            row["status"] = "ok"
        except Exception as err:  # one failing model (a crash, out of memory) must not cost the rest of the grid
            message = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
            row = {"model": model, "epochs": epochs, "smoke": _smoke_key(args, model), "status": message}
        row |= {
            "accelerator": args.accelerator,
            "precision": args.precision,
            "device": device,
            "published_acc": PUBLISHED.get(model, ""),
        }
        print("model_zoo: " + json.dumps(row), flush=True)
        with table.open("a", newline="") as fh:
            csv.DictWriter(fh, COLUMNS, restval="").writerow(row)
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    write_markdown(rows, out / "model_zoo.md", args)
    print(f"model_zoo: wrote {table} and {out / 'model_zoo.md'}")


if __name__ == "__main__":
    main()
