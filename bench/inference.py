"""Inference on CPU: ``bloodcls predict`` images/s vs the ONNX export under ONNX Runtime (with its parity check).

- ``bloodcls predict`` runs in-process through the real CLI (``BloodCLI``: the run's config.yaml + ``--ckpt_path``)
  over the run's test split at ``--batch-size`` (256), once with bloodcls's defaults (fp32, 2 loader workers) and
  once with the recommended fast CPU settings (bf16 autocast, channels_last, 2 x 2 convolutions as GEMMs, no loader
  workers); images/s is the predict loop
  from the end of its first batch to the end of its last (start-up, data hashing and the CSV writer excluded).
- ``bloodcls export --format onnx --check``: export, max |p_onnx - p_torch| on the test split (<= 1e-4), then
  ONNX Runtime and eager PyTorch images/s over the same uint8 batches (median of ``--repeats`` passes).

Without ``--ckpt_path`` a resnet18 checkpoint is made by a one-step ``bloodcls fit`` on PBC (speed does not depend
on the weights).

    python bench/inference.py [--ckpt_path RUN/checkpoints/best.ckpt] [--batch-size 256]

Writes ``bench/results/inference/inference.{json,csv}`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    FAST_CPU_OVERRIDES,
    FAST_CPU_PRECISION,
    RESULTS,
    PredictTimer,
    add_common_arguments,
    fit_args,
    machine_state,
    median,
    plain_argv,
    set_threads,
    write_results,
)
from bloodcls.cli import BloodCLI  # noqa: E402
from bloodcls.commands.export import load_classifier, run_export  # noqa: E402
from bloodcls.commands.onnx_graph import ProbabilitiesModel  # noqa: E402
from bloodcls.data import BloodCellDataModule  # noqa: E402

TIMER = '[{"class_path": "bench.common.PredictTimer"}]'
# bloodcls's defaults, whatever the checkpoint's run used.
FP32_DEFAULTS = [
    "--trainer.precision",
    "32-true",
    "--model.init_args.channels_last",
    "false",
    "--model.init_args.tiny_map_matmul",
    "false",
    "--data.init_args.num_workers",
    "2",
]


def make_checkpoint(args: argparse.Namespace, out: Path) -> Path:
    """A one-step ``bloodcls fit`` of the benchmark model on the data; returns its checkpoint."""
    fit = fit_args(
        data_root=args.data_root,
        image_size=args.image_size,
        backbone=args.backbone,
        batch_size=64,
        out_dir=out,
        name="checkpoint",
        accelerator="cpu",
        precision="32-true",
        cache_dir=args.cache_dir,
        extra=[
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--data.init_args.num_workers",
            "0",
        ],
    )
    with plain_argv():
        cli = BloodCLI(args=["fit", *fit])
    ckpt_dir = Path(cli.trainer.log_dir) / "checkpoints"
    return next(p for p in (ckpt_dir / "best.ckpt", ckpt_dir / "last.ckpt") if p.is_file())


def predict_images_per_s(ckpt: Path, batch_size: int, extra: list[str]) -> float:
    """One in-process ``bloodcls predict`` on the run's test split; the predict loop's images/s."""
    config = ckpt.parent.parent / "config.yaml"
    args = [
        "predict",
        "--config",
        str(config),
        "--ckpt_path",
        str(ckpt),
        "--data.init_args.eval_batch_size",
        str(batch_size),
        "--trainer.callbacks",
        TIMER,
        *extra,
    ]
    with plain_argv():
        cli = BloodCLI(args=args)
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, PredictTimer))
    return timer.images_per_s


def test_batches(ckpt: Path, batch_size: int, data_root: str | None) -> list[np.ndarray]:
    """The run's test split as uint8 (B, 3, S, S) batches, restored from the checkpoint as ``bloodcls test`` does."""
    overrides: dict[str, Any] = {"num_workers": 0, "eval_batch_size": batch_size}
    if data_root:
        overrides["root"] = data_root
    dm = BloodCellDataModule.load_from_checkpoint(ckpt, **overrides)
    dm.setup("test")
    return [batch["image"].numpy() for batch in dm.test_dataloader()]


def ort_and_torch_images_per_s(
    onnx_path: Path, ckpt: Path, batches: list[np.ndarray], threads: int, repeats: int
) -> tuple[float, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model = ProbabilitiesModel(load_classifier(ckpt)).eval()
    n = sum(len(b) for b in batches)
    session.run(None, {"images": batches[0]})  # warm-up
    with torch.inference_mode():
        model(torch.from_numpy(batches[0]))
    ort_rates, torch_rates = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            session.run(None, {"images": b})
        ort_rates.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model(torch.from_numpy(b))
        torch_rates.append(n / (time.perf_counter() - start))
    return median(ort_rates), median(torch_rates)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--ckpt_path", "--ckpt-path", default=None, help="a run's checkpoint (default: make one)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "inference"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    out = Path(args.out)
    ckpt = Path(args.ckpt_path) if args.ckpt_path else make_checkpoint(args, out)
    # The optimizer setting in FAST_CPU_OVERRIDES is harmless at predict time; workers / precision / layout count.
    fast = ["--trainer.precision", FAST_CPU_PRECISION, *FAST_CPU_OVERRIDES]
    rows: list[dict[str, Any]] = []
    for name, extra in (("bloodcls predict (fp32 defaults)", FP32_DEFAULTS), ("bloodcls predict (fast CPU)", fast)):
        rates = [predict_images_per_s(ckpt, args.batch_size, extra) for _ in range(args.repeats)]
        rows.append({"engine": name, "images_per_s": median(rates), "rounds": [round(r, 1) for r in rates]})
    onnx_path = out / "model.onnx"
    export = run_export(
        argparse.Namespace(
            ckpt_path=str(ckpt),
            format="onnx",
            output=str(onnx_path),
            check=True,
            tolerance=1e-4,
            batch_size=args.batch_size,
            threads=threads,
            data_root=args.data_root,
        )
    )
    batches = test_batches(ckpt, args.batch_size, args.data_root)
    ort_rate, torch_rate = ort_and_torch_images_per_s(onnx_path, ckpt, batches, threads, args.repeats)
    rows.append({"engine": "onnxruntime (CPUExecutionProvider)", "images_per_s": ort_rate})
    rows.append({"engine": "eager torch, fp32 (same batches)", "images_per_s": torch_rate})
    summary = {
        "benchmark": "inference",
        "command": " ".join([sys.executable, *sys.argv]),
        "settings": vars(args),
        "checkpoint": str(ckpt),
        "machine": machine_state(),
        "parity": export["parity"],
        "export_s": export["export_s"],
    }
    path = write_results(out, "inference", summary, rows)
    parity = export["parity"]
    print(
        f"\ninference ({args.backbone}, {args.image_size} px, batch {args.batch_size}, {threads} threads; "
        f"{parity['n_images']} test images; load avg {summary['machine']['load_avg_1_5_15']})"
    )
    for row in rows:
        print(f"  {row['engine']:40s} {row['images_per_s']:8.0f} images/s")
    print(
        f"  ONNX parity: max |p_onnx - p_torch| = {parity['max_abs_diff']:.2e} "
        f"({'OK' if parity['passed'] else 'FAILED'}, tolerance 1e-4)"
    )
    print(f"results: {path}")
    print(json.dumps({r["engine"]: round(r["images_per_s"], 1) for r in rows}))


if __name__ == "__main__":
    main()
