"""Data pipeline: the decode-once cache's first (cold) epoch vs later epochs, the loader's own images/s with
augmentation vs the model's training images/s, and the cache's memory.

1. Cold start in a fresh ``cache_dir``: ``setup`` hashes every file, decodes + resizes every JPEG once and writes the
   memory-mapped cache; then ``--epochs`` epochs of the training loader (``weak`` augmentation, batch 64, no
   model). JPEG decodes are counted in every phase (``bloodcls.data.cache.decode_image`` is wrapped): later epochs,
   and a later run on the same cache (a new datamodule), must decode none.
2. Loader-only images/s with the ``weak`` (and flips-only) augmentation for 0 / 1 / 2 workers, against the model's
   training images/s (the (b) and (c) medians of ``bench/results/throughput/throughput.json`` when present, or
   ``--model-images-per-s``): the loader should feed at least 5x what the model consumes.
3. Cache memory: N x S x S x 3 bytes, the ``.npy`` file's size, and the process's RSS after a full epoch.

    python bench/data_pipeline.py [--data-root ../shared/datasets/pbc] [--image-size 64]

Writes ``bench/results/data_pipeline/data_pipeline.{json,csv}`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bloodcls.data.cache as cache_module  # noqa: E402
from bench.common import (  # noqa: E402
    FLIPS_TRANSFORM,
    RESULTS,
    add_common_arguments,
    machine_state,
    peak_rss_mib,
    reset_peak_rss,
    set_threads,
    write_results,
)
from bloodcls.data import BloodCellDataModule  # noqa: E402


@contextmanager
def counting_decodes() -> Iterator[dict[str, int]]:
    """Count JPEG/PNG decodes made through the cache module while the block runs."""
    counter = {"decodes": 0}
    original = cache_module.decode_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["decodes"] += 1
        return original(*args, **kwargs)

    cache_module.decode_image = counted  # type: ignore[assignment]
    try:
        yield counter
    finally:
        cache_module.decode_image = original  # type: ignore[assignment]


def datamodule(args: argparse.Namespace, cache_dir: str, transform: Any, workers: int) -> BloodCellDataModule:
    return BloodCellDataModule(
        root=args.data_root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=workers,
        train_transform=transform,
        cache="disk",
        cache_dir=cache_dir,
    )


def loader_epoch(dm: BloodCellDataModule, max_batches: int | None = None) -> tuple[float, int]:
    """Seconds and images for one pass over the training loader (worker start-up included)."""
    start, n = time.perf_counter(), 0
    for i, batch in enumerate(dm.train_dataloader()):
        n += len(batch["label"])
        if max_batches is not None and i + 1 >= max_batches:
            break
    return time.perf_counter() - start, n


def cold_and_warm(args: argparse.Namespace, cache_dir: str) -> dict[str, Any]:
    """Part 1 (and 3): first epoch with a cold cache, later epochs, a later run on the warm cache."""
    out: dict[str, Any] = {}
    reset_peak_rss()
    with counting_decodes() as count:
        dm = datamodule(args, cache_dir, "weak", 0)
        start = time.perf_counter()
        dm.setup("fit")
        out["cold_setup_s"] = time.perf_counter() - start  # hash + decode + write the cache
        out["cold_setup_decodes"] = count["decodes"]
    epochs = []
    for epoch in range(1, args.epochs + 1):
        with counting_decodes() as count:
            seconds, n = loader_epoch(dm)
        epochs.append({"epoch": epoch, "loader_s": seconds, "images": n, "decodes": count["decodes"]})
    out["epochs"] = epochs
    out["first_epoch_s"] = out["cold_setup_s"] + epochs[0]["loader_s"]
    out["later_epoch_s"] = [e["loader_s"] for e in epochs[1:]]
    out["rss_after_epochs_mib"] = peak_rss_mib()
    with counting_decodes() as count:
        dm_warm = datamodule(args, cache_dir, "weak", 0)
        start = time.perf_counter()
        dm_warm.setup("fit")
        out["warm_run_setup_s"] = time.perf_counter() - start  # hash only + memory-map the cache
        out["warm_run_decodes"] = count["decodes"]
    data = dm.data
    n_images, size = len(data.hashes), args.image_size
    cache_file = Path(data.cache_file) if data.cache_file else None
    out["cache"] = {
        "n_images": n_images,
        "image_size": size,
        "bytes_formula": n_images * size * size * 3,
        "mib_formula": n_images * size * size * 3 / 2**20,
        "file": str(cache_file) if cache_file else None,
        "file_mib": cache_file.stat().st_size / 2**20 if cache_file else None,
    }
    out["n_train"] = int(len(dm.rows_of("train")))
    return out


def loader_throughput(args: argparse.Namespace, cache_dir: str) -> list[dict[str, Any]]:
    """Part 2: loader-only images/s per augmentation and worker count (second pass, so workers are warm)."""
    rows = []
    for name, transform in (("weak", "weak"), ("flips", json.loads(FLIPS_TRANSFORM))):
        for workers in args.workers:
            dm = datamodule(args, cache_dir, transform, workers)
            dm.setup("fit")
            loader_epoch(dm, max_batches=4)  # warm-up: worker start, page cache
            seconds, n = loader_epoch(dm, max_batches=args.loader_batches)
            rows.append({"augmentation": name, "workers": workers, "images": n, "images_per_s": n / seconds})
            print(f"  loader {name:5s} workers={workers}: {n / seconds:8.0f} images/s", flush=True)
    return rows


def model_throughput(args: argparse.Namespace) -> dict[str, float]:
    if args.model_images_per_s:
        return {"given": args.model_images_per_s}
    path = Path(args.throughput_json)
    if not path.is_file():
        return {}
    configs = json.loads(path.read_text()).get("configs", {})
    return {f"({k}) {v['description'][:40]}": v["images_per_s_median"] for k, v in configs.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="loader epochs after the cold setup")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--loader-batches", type=int, default=100, help="batches timed per loader setting")
    parser.add_argument("--model-images-per-s", type=float, default=None)
    parser.add_argument("--throughput-json", default=str(RESULTS / "throughput" / "throughput.json"))
    parser.add_argument("--out", default=str(RESULTS / "data_pipeline"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bloodcls-cold-cache-", dir=args.cache_dir) as cache_dir:
        part1 = cold_and_warm(args, cache_dir)
        loaders = loader_throughput(args, cache_dir)
    models = model_throughput(args)
    weak = [r["images_per_s"] for r in loaders if r["augmentation"] == "weak"]
    fastest_model = max(models.values(), default=float("nan"))
    summary = {
        "benchmark": "data_pipeline",
        "command": " ".join([sys.executable, *sys.argv]),
        "settings": vars(args),
        "machine": machine_state(),
        **part1,
        "model_images_per_s": models,
        "loader_weak_best_images_per_s": max(weak, default=float("nan")),
        "loader_over_fastest_model": max(weak, default=float("nan")) / fastest_model if models else None,
    }
    path = write_results(Path(args.out), "data_pipeline", summary, loaders)
    cache = part1["cache"]
    print(
        f"\ndata pipeline ({args.data_root}, {args.image_size} px, batch {args.batch_size}; load avg "
        f"{summary['machine']['load_avg_1_5_15']})"
    )
    print(
        f"  first epoch (cold cache): {part1['first_epoch_s']:.1f}s = setup {part1['cold_setup_s']:.1f}s "
        f"({part1['cold_setup_decodes']} decodes) + loader {part1['epochs'][0]['loader_s']:.1f}s"
    )
    print(
        f"  later epochs: {', '.join(f'{s:.1f}s' for s in part1['later_epoch_s'])} "
        f"(decodes: {[e['decodes'] for e in part1['epochs'][1:]]})"
    )
    print(f"  later run on the warm cache: setup {part1['warm_run_setup_s']:.1f}s, {part1['warm_run_decodes']} decodes")
    print(
        f"  cache: {cache['n_images']} x {cache['image_size']}^2 x 3 B = {cache['mib_formula']:.1f} MiB; "
        f"file {cache['file_mib']:.1f} MiB"
    )
    for name, value in models.items():
        print(f"  model training images/s {name}: {value:.1f}")
    if summary["loader_over_fastest_model"] is not None:
        print(f"  loader (weak, best) / fastest model = {summary['loader_over_fastest_model']:.1f}x (target >= 5x)")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
