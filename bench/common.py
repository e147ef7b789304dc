"""Helpers shared by the speed benchmarks: machine description, per-phase peak memory, results files, and the
command lines of the ``bloodcls fit`` configurations they compare (default vs recommended fast CPU settings)."""

from __future__ import annotations

import csv
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
PBC_ROOT = (REPO.parent / "shared" / "datasets" / "pbc").resolve()
RESULTS = REPO / "bench" / "results"

# Random horizontal / vertical flips only: the augmentation of the plain PyTorch reference loop, as a
# ``data.train_transform`` list (bloodcls.data.transforms).
FLIPS_TRANSFORM = '[{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}]'

# The recommended CPU settings, as command-line overrides of any ``bloodcls fit`` config (README "Speed"), plus
# ``--trainer.precision FAST_CPU_PRECISION``. bf16 autocast runs the convolutions on AMX / AVX512-BF16 through
# oneDNN; NHWC is oneDNN's native layout; the weight gradients of convolutions on maps up to 8 x 8 (and the whole
# 2 x 2 ones) run as GEMMs, where oneDNN's kernels are slow; the fused AdamW kernel replaces a dozen elementwise
# passes over the weights per step; loader workers would steal the cores the model needs (augmenting a cached uint8
# batch costs well under 1 % of a step). torch.compile is measured separately (FAST_COMPILE_OVERRIDES): it did not
# pay off for ResNet-18 at 64 px on our CPUs.
FAST_CPU_PRECISION = "bf16-mixed"
FAST_CPU_OVERRIDES: tuple[str, ...] = (
    "--model.init_args.channels_last",
    "true",
    "--model.init_args.tiny_map_matmul",
    "true",
    "--model.init_args.optimizer.init_args.fused",
    "true",
    "--data.init_args.num_workers",
    "0",
)
FAST_COMPILE_OVERRIDES: tuple[str, ...] = ("--model.init_args.compile", "true")


def add_common_arguments(parser: Any) -> None:
    """Data / machine arguments every speed benchmark takes (an ``argparse.ArgumentParser``)."""
    parser.add_argument("--data-root", default=str(PBC_ROOT), help="PBC-style ImageFolder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: physical cores)")
    parser.add_argument("--cache-dir", default=None, help="decode cache directory (default: $BLOODCLS_CACHE)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` and return the intra-op thread count in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_state() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was (load averages)."""
    import torch

    flags = ""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_model": model,
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ---------------------------------------------------------------------------------------------- memory
def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Collect garbage, then reset this process's peak RSS (Linux ``clear_refs`` 5), so the next ``peak_rss_mib``
    is per phase."""
    gc.collect()  # Lightning trainers of earlier rounds sit in reference cycles until collected
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak RSS of this process since the last ``reset_peak_rss`` (else since start), MiB."""
    hwm = _status_kib("self", "VmHWM")
    if hwm is None:  # not Linux: lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return hwm / 1024.0


def _private_kib(pid: str) -> int:
    """Memory only this process holds (USS: private clean + dirty pages), KiB; 0 when unreadable."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))


def current_rss_mib() -> float:
    """Resident memory of this process now, MiB (NaN where /proc is unavailable)."""
    rss = _status_kib("self", "VmRSS")
    return float("nan") if rss is None else rss / 1024.0


def children_uss_mib(exclude: Sequence[int] = ()) -> float:
    """Memory this process's children (dataloader workers) add: their summed USS, MiB. (Their RSS would count
    the parent's pages they share copy-on-write after the fork, i.e. the whole model and dataset again.)
    ``exclude``: child pids that are not loader workers (a benchmark's own helper processes)."""
    total = 0
    skip = {str(pid) for pid in exclude}
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            pids = task.read_text().split()
        except OSError:
            continue
        total += sum(_private_kib(pid) for pid in pids if pid not in skip)
    return total / 1024.0


# ---------------------------------------------------------------------------------------------- results
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def write_results(out_dir: Path, name: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """``<out>/<name>.json`` (summary + rows) and ``<out>/<name>.csv`` (rows); returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps({**summary, "rows": rows}, indent=2, default=str))
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with (out_dir / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return json_path


@contextmanager
def plain_argv() -> Iterator[None]:
    """Hide the benchmark's own arguments while ``BloodCLI(args=...)`` runs in-process (LightningCLI warns when
    both ``args`` and ``sys.argv`` carry arguments)."""
    saved = sys.argv
    sys.argv = saved[:1] or ["bench"]
    try:
        yield
    finally:
        sys.argv = saved


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the elapsed wall seconds."""
    box = {"s": float("nan")}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def fit_args(
    *,
    data_root: str,
    image_size: int,
    backbone: str,
    batch_size: int,
    out_dir: Path,
    name: str,
    accelerator: str,
    precision: str,
    cache_dir: str | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``bloodcls fit`` arguments (without the subcommand) for the supervised benchmark model: flips only,
    AdamW at a constant 1e-3 (as the reference loop), everything else as a user has it by default."""
    args = [
        "--model.class_path",
        "bloodcls.strategies.Supervised",
        "--model.init_args.backbone",
        backbone,
        "--model.init_args.lr_schedule",
        "constant",
        "--data.class_path",
        "bloodcls.data.BloodCellDataModule",
        "--data.init_args.root",
        data_root,
        "--data.init_args.image_size",
        str(image_size),
        "--data.init_args.batch_size",
        str(batch_size),
        "--data.init_args.train_transform",
        FLIPS_TRANSFORM,
        "--trainer.accelerator",
        accelerator,
        "--trainer.devices",
        "1",
        "--trainer.precision",
        precision,
        "--trainer.logger.class_path",
        "bloodcls.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(out_dir / "runs"),
        "--trainer.logger.init_args.name",
        name,
    ]
    if cache_dir:
        args += ["--data.init_args.cache_dir", cache_dir]
    return [*args, *extra]


class PredictTimer(Callback):
    """Lightning callback (``--trainer.callbacks '[{"class_path": "bench.common.PredictTimer"}]'``): wall time of
    the predict loop from the end of its first batch (warm-up) to the end of its last; images counted likewise."""

    def __init__(self) -> None:
        self.t0 = self.t1 = float("nan")
        self.images = 0
        self.batches = 0

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        self.batches += 1
        if self.batches == 1:
            self.t0 = time.perf_counter()
        else:
            self.images += len(batch["image"])
            self.t1 = time.perf_counter()

    @property
    def images_per_s(self) -> float:
        return self.images / (self.t1 - self.t0) if self.images else float("nan")


class TestAccuracyTimeline(Callback):
    """Benchmark-only callback: after every validation, the test split's accuracy and the training wall time so far.

    The test evaluations are excluded from the clock and never influence training or checkpoint selection (that
    stays on validation metrics); torch's RNG state is restored afterwards so the run trains as it would without.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.t0 = float("nan")
        self.excluded = 0.0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0, self.excluded, self.rows = time.perf_counter(), 0.0, []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        start = time.perf_counter()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row = {
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
            "train_wall_s": start - self.t0 - self.excluded,
            "val_acc": metrics.get("val/acc", float("nan")),
            "val_balanced_acc": metrics.get("val/balanced_acc", float("nan")),
            "test_acc": self._test_accuracy(trainer, pl_module),
        }
        self.rows.append(row)
        self.excluded += time.perf_counter() - start
        print(
            f"[timeline] epoch {row['epoch']}: {row['train_wall_s'] / 60:.2f} min, val acc {row['val_acc']:.4f}, "
            f"test acc {row['test_acc']:.4f}",
            flush=True,
        )

    @staticmethod
    def _test_accuracy(trainer: Any, pl_module: Any) -> float:
        import torch

        rng = torch.get_rng_state()
        was_training = pl_module.training
        pl_module.eval()
        correct = n = 0
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            for batch in trainer.datamodule.test_dataloader():
                logits = pl_module(batch["image"].to(pl_module.device))  # (B, K)
                correct += int((logits.argmax(dim=1).cpu() == batch["label"]).sum())
                n += len(batch["label"])
        pl_module.train(was_training)
        torch.set_rng_state(rng)
        return correct / max(n, 1)
