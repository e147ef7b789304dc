"""Training throughput: a plain PyTorch loop vs ``bloodcls fit`` vs ``bloodcls fit`` with the recommended CPU settings.

One process, interleaved rounds (a b c a b c ...) so machine noise hits every configuration alike:

  (a) reference: a plain PyTorch loop over the training split pre-decoded into one uint8 tensor, per-image random
      horizontal / vertical flips, AdamW (lr 1e-3) and cross-entropy, the same timm backbone, glibc's malloc
      defaults (``a_kept``: the same loop with bloodcls's ``bloodcls.allocator.keep_freed_memory``);
  (b) ``bloodcls fit``: the real CLI machinery (``BloodCLI`` -> datamodule + strategy + Lightning Trainer) with the
      same model, data, batch, optimizer and augmentation (flips only), and a user's defaults otherwise (rich
      progress bar, CSV logger, checkpointing, ``data.num_workers`` null: no loader workers on a CPU);
  (c) ``bloodcls fit`` with the recommended CPU settings (``bench.common.FAST_CPU_OVERRIDES``: bf16 autocast,
      channels_last, fused AdamW, no loader workers), and ``c_compile``: the same plus ``torch.compile`` of the
      backbone (reported separately because it did not pay off here).

Each round runs ``--warmup`` steps, then times ``--steps`` steps (wall clock from the end of one optimizer step to
the end of another, so data loading, logging and the progress bar are included). A bloodcls round is a fresh
``trainer.fit`` of the same model and datamodule (``max_steps`` = warmup + steps): start-up (sanity check, worker
start, and in round 1 the compile of (c)) falls outside the timed window and is reported as ``startup_s``.
Memory: ``peak_rss_mib`` is the process's peak resident memory during a phase (Linux ``VmHWM``, reset after a
``gc.collect()`` before each phase); all configurations live in the same process, so it includes the others'
resident memory -- except (a) and ``a_kept``, which run in a spawned process of their own (``ReferenceProcess``)
and report its memory. ``first_round_rss_growth_mib`` is the growth during a configuration's first phase, which builds
its model, optimizer and data: its own footprint. Loader workers are reported separately (``workers_uss_mib``:
the memory they add, their summed USS at the end of the window).

    python bench/throughput.py                         # PBC, 64 px, resnet18, batch 64, 5 rounds
    python bench/throughput.py --accelerator gpu --precision bf16-mixed
    python bench/throughput.py --ceiling                # + this CPU's fp32 / bf16 matmul ceilings (bench/ceiling.py)

Writes ``bench/results/throughput/throughput.{json,csv}`` and prints a summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    FAST_COMPILE_OVERRIDES,
    FAST_CPU_OVERRIDES,
    FAST_CPU_PRECISION,
    RESULTS,
    add_common_arguments,
    children_uss_mib,
    current_rss_mib,
    fit_args,
    machine_state,
    median,
    peak_rss_mib,
    plain_argv,
    reset_peak_rss,
    set_threads,
    write_results,
)
from bloodcls.allocator import keep_freed_memory  # noqa: E402
from bloodcls.cli import BloodCLI  # noqa: E402
from bloodcls.data import BloodCellDataModule  # noqa: E402
from bloodcls.data.splits import TRAIN  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Window:
    """One timed window of one configuration."""

    images_per_s: float
    images_per_cpu_s: float  # per CPU-second of this process (loader workers not counted)
    startup_s: float
    rss_start_mib: float  # this process's RSS when the phase started
    peak_rss_mib: float  # its peak during the phase
    workers_uss_mib: float
    mean_loss: float = float("nan")  # training loss over the timed steps: a window that does not learn is no speed


@dataclass
class Phase:
    """A configuration under test: ``run(warmup, steps) -> Window``, plus what it was."""

    name: str
    description: str
    run: Callable[[int, int], Window]
    windows: list[Window] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- (a) reference
class ReferenceLoop:
    """(a) The plain PyTorch loop: shuffled batches of a pre-decoded uint8 tensor, random flips, AdamW, CE."""

    def __init__(
        self,
        images: torch.Tensor,  # (N, 3, S, S) uint8
        labels: torch.Tensor,  # (N,) int64
        backbone: str,
        num_classes: int,
        batch_size: int,
        device: torch.device,
        precision: str,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.images, self.labels, self.batch_size, self.device = images, labels, batch_size, device
        self.model = timm.create_model(backbone, num_classes=num_classes).to(device).train()
        cfg = self.model.pretrained_cfg
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1) * 255.0
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.generator = torch.Generator().manual_seed(seed)
        self.batches = self._batch_indices()

    def _batch_indices(self) -> Iterator[torch.Tensor]:
        n = len(self.labels)
        while True:  # epochs of a fresh permutation, last partial batch dropped
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n - self.batch_size + 1, self.batch_size):
                yield perm[start : start + self.batch_size]

    def _flip(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        flip = torch.rand(len(x), generator=self.generator) < 0.5  # (B,) one coin per image
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(dim), x)

    def step(self) -> float:
        idx = next(self.batches)
        x = self._flip(self._flip(self.images[idx], 3), 2)  # (B, 3, S, S) uint8, h- then v-flips
        x = x.to(self.device, non_blocking=True)
        y = self.labels[idx].to(self.device, non_blocking=True)
        dtype, enabled = self.autocast_dtype or torch.float32, self.autocast_dtype is not None
        with torch.autocast(self.device.type, dtype=dtype, enabled=enabled):
            logits = self.model((x.float() - self.mean) / self.std)  # (B, K)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def window(self, warmup: int, steps: int) -> Window:
        reset_peak_rss()
        rss_start = current_rss_mib()
        start = time.perf_counter()
        for _ in range(warmup):
            self.step()
        _sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        losses = [self.step() for _ in range(steps)]
        _sync(self.device)
        t1, c1 = time.perf_counter(), time.process_time()
        n = steps * self.batch_size
        return Window(n / (t1 - t0), n / (c1 - c0), t0 - start, rss_start, peak_rss_mib(), 0.0, mean(losses))


def _reference_worker(args: argparse.Namespace, keep_memory: bool, requests: Any, results: Any) -> None:
    """A spawned process serving (a) windows: ``(warmup, steps)`` in, a ``Window`` (or the exception) out."""
    try:
        set_threads(args.threads)  # its own process: nothing else changes the thread count or malloc here
        if keep_memory:
            keep_freed_memory()  # a_kept: bloodcls's malloc settings; (a) keeps glibc's adaptive defaults
        images, labels, num_classes = reference_data(args)
        device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
        loop = ReferenceLoop(images, labels, args.backbone, num_classes, args.batch_size, device, args.precision)
    except Exception as err:  # noqa: BLE001 - reported by the parent's first window
        results.put(err)
        return
    while (request := requests.get()) is not None:
        try:
            results.put(loop.window(*request))
        except Exception as err:  # noqa: BLE001
            results.put(err)


REFERENCE_PIDS: list[int] = []  # the (a) processes: children of this one, but not loader workers


class ReferenceProcess:
    """(a) in a process of its own, spawned fresh: glibc's malloc adapts its mmap threshold as a plain script's does.
    In this process the bloodcls phases switch ``bloodcls.allocator``'s settings on, and mallopt cannot give the
    adaptive default back, so a reference measured here would be slower than the script it stands for."""

    def __init__(self, args: argparse.Namespace, keep_memory: bool) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.requests, self.results = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_reference_worker, args=(args, keep_memory, self.requests, self.results), daemon=True
        )
        self.process.start()
        REFERENCE_PIDS.append(int(self.process.pid or 0))

    def window(self, warmup: int, steps: int) -> Window:
        self.requests.put((warmup, steps))
        result = self.results.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        self.requests.put(None)
        self.process.join(timeout=30)


# ---------------------------------------------------------------------------------------------- (b), (c) bloodcls
class StepTimer(Callback):
    """Times training steps ``warmup + 1 .. warmup + steps`` of a fit (from the end of one optimizer step to the
    end of another) and stops the fit there."""

    def __init__(self, warmup: int, steps: int, batch_size: int) -> None:
        self.warmup, self.steps, self.batch_size = warmup, steps, batch_size
        self.seen = 0
        self.t_fit = self.t0 = self.t1 = self.c0 = self.c1 = float("nan")
        self.workers_uss = 0.0
        self.rss_start = float("nan")
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.seen += 1
        if self.warmup < self.seen <= self.warmup + self.steps:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan"))
        if self.seen == self.warmup:
            _sync(pl_module.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif self.seen == self.warmup + self.steps:
            _sync(pl_module.device)
            self.t1, self.c1 = time.perf_counter(), time.process_time()
            self.workers_uss = children_uss_mib(exclude=REFERENCE_PIDS)
            trainer.should_stop = True

    def window(self) -> Window:
        if self.seen < self.warmup + self.steps:
            raise RuntimeError(f"the fit ran {self.seen} steps, fewer than warmup + steps; lower --steps")
        n = self.steps * self.batch_size
        rates = (n / (self.t1 - self.t0), n / (self.c1 - self.c0))
        return Window(*rates, self.t0 - self.t_fit, self.rss_start, peak_rss_mib(), self.workers_uss, mean(self.losses))


class BloodclsFit:
    """(b) / (c): ``bloodcls fit`` built by ``BloodCLI``; each window is a new Trainer fitting the same model and
    datamodule, so compiled code, the decoded data and the weights carry over between rounds."""

    def __init__(self, args: list[str], batch_size: int) -> None:
        self.args, self.batch_size = args, batch_size
        self.model: L.LightningModule | None = None
        self.datamodule: L.LightningDataModule | None = None

    def window(self, warmup: int, steps: int) -> Window:
        reset_peak_rss()
        timer = StepTimer(warmup, steps, self.batch_size)
        timer.rss_start = current_rss_mib()
        timer.t_fit = time.perf_counter()
        with plain_argv():
            cli = BloodCLI(args=[*self.args, "--trainer.max_steps", str(warmup + steps)], run=False)
        if self.model is None:
            self.model, self.datamodule = cli.model, cli.datamodule
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(self.model, datamodule=self.datamodule)
        return timer.window()


# ---------------------------------------------------------------------------------------------- driver
def reference_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The training split decoded once (the same images ``bloodcls fit`` trains on), as (N, 3, S, S) uint8."""
    dm = BloodCellDataModule(root=args.data_root, image_size=args.image_size, cache_dir=args.cache_dir)
    rows = dm.rows_of(TRAIN)
    images = torch.from_numpy(np.ascontiguousarray(dm.data.images[rows])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(dm.data.listing.labels[rows].astype(np.int64))
    return images, labels, dm.num_classes


def build_phases(args: argparse.Namespace) -> list[Phase]:
    out = Path(args.out)
    common = {
        "data_root": args.data_root,
        "image_size": args.image_size,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "out_dir": out,
        "accelerator": args.accelerator,
        "cache_dir": args.cache_dir,
    }
    phases: list[Phase] = []
    configs = args.configs.split(",")
    for name, keep in (("a", False), ("a_kept", True)):
        if name in configs:
            ref = ReferenceProcess(args, keep_memory=keep)
            malloc = ", freed memory kept (bloodcls.allocator)" if keep else ""
            phases.append(Phase(name, f"plain PyTorch loop ({args.precision}{malloc})", ref.window))
    if "b" in configs:
        fit_b = BloodclsFit(fit_args(name="b_default", precision=args.precision, **common), args.batch_size)
        phases.append(Phase("b", f"bloodcls fit, defaults ({args.precision})", fit_b.window))
    fast = [*FAST_CPU_OVERRIDES, "--trainer.precision", args.fast_precision]
    for name, extra in (("c", fast), ("c_compile", [*fast, *FAST_COMPILE_OVERRIDES])):
        if name in configs:
            fit_c = BloodclsFit(
                fit_args(name=name, precision=args.fast_precision, extra=extra, **common), args.batch_size
            )
            what = "recommended" if name == "c" else "recommended + torch.compile"
            phases.append(Phase(name, f"bloodcls fit, {what}: {' '.join(extra)}", fit_c.window))
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        fit_v = BloodclsFit(
            fit_args(name=name, precision=args.precision, extra=overrides.split(), **common), args.batch_size
        )
        phases.append(Phase(name, f"bloodcls fit {overrides}", fit_v.window))
    return phases


def mean(values: list[float]) -> float:
    """Arithmetic mean; NaN when any value is NaN / inf or there is none (a diverged window stays visible)."""
    return float(np.mean(values)) if values and all(np.isfinite(values)) else float("nan")


def learned(phase: Phase) -> bool:
    """Every timed window of ``phase`` had a finite training loss."""
    return bool(phase.windows) and all(np.isfinite(w.mean_loss) for w in phase.windows)


NOT_LEARNING = "training loss was not finite in some timed window: no speed figure from a run that does not learn"


def summarize(phases: list[Phase], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [{"config": p.name, "round": r, **vars(w)} for p in phases for r, w in enumerate(p.windows, start=1)]
    per_config = {
        p.name: {
            "description": p.description,
            "images_per_s_median": median([w.images_per_s for w in p.windows]),
            "images_per_s_rounds": [round(w.images_per_s, 2) for w in p.windows],
            "images_per_cpu_s_median": median([w.images_per_cpu_s for w in p.windows]),
            "startup_s_first_round": p.windows[0].startup_s if p.windows else None,
            "startup_s_median_later": median([w.startup_s for w in p.windows[1:]]),
            "peak_rss_mib": max((w.peak_rss_mib for w in p.windows), default=None),
            # Round 1 builds this configuration's model, optimizer and data: its own footprint.
            "first_round_rss_growth_mib": p.windows[0].peak_rss_mib - p.windows[0].rss_start_mib if p.windows else None,
            "workers_uss_mib": max((w.workers_uss_mib for w in p.windows), default=None),
            "mean_loss_rounds": [round(w.mean_loss, 4) for w in p.windows],
            "refused": None if learned(p) else NOT_LEARNING,
        }
        for p in phases
    }
    for config in per_config.values():  # a run that does not learn gets no speed figure and no ratio
        if config["refused"]:
            config["images_per_s_median"] = config["images_per_cpu_s_median"] = None
    ratios: dict[str, float] = {}
    cpu_ratios: dict[str, float] = {}
    if "a" in per_config and not per_config["a"]["refused"]:
        base = per_config["a"]["images_per_s_median"]
        base_cpu = per_config["a"]["images_per_cpu_s_median"]
        timed = [n for n in per_config if n != "a" and not per_config[n]["refused"]]
        ratios = {f"{n}/a": per_config[n]["images_per_s_median"] / base for n in timed}
        cpu_ratios = {f"{n}/a": per_config[n]["images_per_cpu_s_median"] / base_cpu for n in timed}
    summary = {
        "benchmark": "throughput",
        "command": " ".join([sys.executable, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine_state(),
        "configs": per_config,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "targets": {"b/a": 0.95, "c/a": 1.5},
    }
    return summary, rows


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nthroughput ({summary['settings']['backbone']}, {summary['settings']['image_size']} px, batch "
        f"{summary['settings']['batch_size']}; median of {summary['settings']['rounds']} rounds x "
        f"{summary['settings']['steps']} steps; load avg {summary['machine']['load_avg_1_5_15']})"
    )
    for name, c in summary["configs"].items():
        if c["refused"]:
            print(f"  ({name}) REFUSED: {c['refused']} (losses {c['mean_loss_rounds']}) -- {c['description']}")
            continue
        print(
            f"  ({name}) {c['images_per_s_median']:8.1f} img/s ({c['images_per_cpu_s_median']:.1f} per CPU-s)  "
            f"rounds {c['images_per_s_rounds']}  "
            f"startup {c['startup_s_first_round']:.1f}s (later {c['startup_s_median_later']:.1f}s)  "
            f"peak RSS {c['peak_rss_mib']:.0f} MiB (own +{c['first_round_rss_growth_mib']:.0f}, workers "
            f"+{c['workers_uss_mib']:.0f})  -- {c['description']}"
        )
    for key, value in summary["ratios"].items():
        target = summary["targets"].get(key)
        verdict = "" if target is None else ("  OK" if value >= target else f"  BELOW target {target}")
        cpu = summary["cpu_ratios"].get(key, float("nan"))
        print(f"  {key} = {value:.3f}{verdict}   (per CPU-second of the main process: {cpu:.3f})")


def precision_dtype(precision: str) -> str:
    """``bf16`` for a bf16 Lightning precision, else ``fp32`` (the matmul rate that bounds it)."""
    return "bf16" if "bf16" in precision else "fp32"


def phase_dtypes(args: argparse.Namespace, phases: list[Phase]) -> dict[str, str]:
    """The matmul dtype each configuration runs at: (a), (b) and variants at ``--precision`` unless a variant sets
    ``--trainer.precision``; (c) and ``c_compile`` at ``--fast-precision``."""
    variants = dict(spec.partition("=")[::2] for spec in args.variant)
    out: dict[str, str] = {}
    for phase in phases:
        precision = args.fast_precision if phase.name in ("c", "c_compile") else args.precision
        words = variants.get(phase.name, "").split()
        if "--trainer.precision" in words[:-1]:
            precision = words[words.index("--trainer.precision") + 1]
        out[phase.name] = precision_dtype(precision)
    return out


def machine_ceiling(args: argparse.Namespace, phases: list[Phase], summary: dict[str, Any]) -> dict[str, Any]:
    from bench.ceiling import ceiling_report

    rates = {name: c["images_per_s_median"] for name, c in summary["configs"].items()}
    torch.set_num_threads(args.threads)  # the machine's rate at the benchmark's threads, not the last phase's
    return ceiling_report(
        lambda: timm.create_model(args.backbone, num_classes=8), args.image_size, rates, phase_dtypes(args, phases)
    )


def print_ceiling(report: dict[str, Any]) -> None:
    rates, bounds = report["matmul_gflops"], report["ceiling_images_per_s"]
    print(
        f"  ceiling: {report['matmul_side']}^2 matmul fp32 {rates['fp32']:.0f} / bf16 {rates['bf16']:.0f} GFLOP/s "
        f"(bf16/fp32 {report['bf16_over_fp32']:.2f}); {report['training_gflop_per_image']:.3f} GFLOP per training "
        f"image -> at most fp32 {bounds['fp32']:.0f} / bf16 {bounds['bf16']:.0f} img/s"
    )
    shares = ", ".join(f"({k}) {v:.0%}" for k, v in report["share_of_ceiling"].items() if v is not None)
    print(f"  share of own dtype's ceiling: {shares}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each window")
    parser.add_argument("--precision", default="32-true", help="precision of (a) and (b)")
    parser.add_argument(
        "--fast-precision",
        default=None,
        help="precision of (c) (default: bf16-mixed, or --precision when it is not 32-true)",
    )
    parser.add_argument(
        "--configs",
        default="a,b,c,c_compile",
        help="which of a, b, c, c_compile, a_kept (the plain loop with bloodcls's malloc settings) to run "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="an extra bloodcls fit configuration, e.g. 'b_w0=--data.init_args.num_workers 0' (repeatable)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure this CPU's fp32 / bf16 matmul rates and report each configuration's share of the "
        "images/s they bound (why c/a differs between CPUs)",
    )
    parser.add_argument("--out", default=str(RESULTS / "throughput"))
    args = parser.parse_args(argv)
    if args.fast_precision is None:
        args.fast_precision = FAST_CPU_PRECISION if args.precision == "32-true" else args.precision
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.threads = set_threads(args.threads)
    L.seed_everything(0, verbose=False)
    phases = build_phases(args)
    for r in range(1, args.rounds + 1):
        for phase in phases:
            window = phase.run(args.warmup, args.steps)
            phase.windows.append(window)
            print(
                f"[round {r}] ({phase.name}) {window.images_per_s:.1f} img/s, loss {window.mean_loss:.4f}, "
                f"startup {window.startup_s:.1f}s, peak RSS {window.peak_rss_mib:.0f} MiB",
                flush=True,
            )
    summary, rows = summarize(phases, args)
    if args.ceiling:
        summary["ceiling"] = machine_ceiling(args, phases, summary)
    path = write_results(Path(args.out), "throughput", summary, rows)
    print_summary(summary)
    if "ceiling" in summary:
        print_ceiling(summary["ceiling"])
    print(f"results: {path}")


if __name__ == "__main__":
    main()
