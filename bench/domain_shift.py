"""Another lab's images, simulated: writes a differently imaged copy (tight crop, other stain, blur) of a run's TEST
split with upper-case class folders, then evaluates checkpoints on it through ``bloodcls test --class_map`` with each
evaluation-time option (none, stain normalisation, scale matching, both). Nothing is chosen here: the options and
their settings are fixed before any number is read.

    OMP_NUM_THREADS=1 python bench/domain_shift.py --runs runs/ext/baseline/version_0 runs/ext/robust/version_0 \
        --out bench/results/domain_shift
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bloodcls.data.domain_shift import DomainShift, write_variant  # noqa: E402

SHIFT = DomainShift()  # zoom 2 (cell fills twice the fraction of the side), H x1.4, E x0.6, hue +12 deg, blur 1.2 px
VARIANT_SIDE = 128  # written at 128 px: the runs evaluate at 64 px, and 2,000 full-size PNGs take long to write
N_REFERENCE = 64  # training-split images whose stain is the normalisation target


def split_rows(run: Path, subset: str) -> list[tuple[str, str]]:
    with (run / "split.csv").open(newline="") as fh:
        return [(r["path"], r["label"]) for r in csv.DictReader(fh) if r["subset"] == subset]


def options(reference: Path) -> dict[str, list[dict[str, Any]] | str]:
    """The evaluation-time options, as ``data.eval_transform`` values (fixed: ZoomOut's factor undoes the variant's
    known zoom, it is not tuned)."""
    stain = {"name": "StainNormalize", "reference": str(reference), "method": "reinhard"}
    zoom = {"name": "ZoomOut", "factor": SHIFT.zoom}
    return {
        "none": "eval",
        "reinhard": [stain],
        "macenko": [{**stain, "method": "macenko"}],
        "zoom_out": [zoom],
        "zoom_out+reinhard": [zoom, stain],
    }


def evaluate(ckpt: Path, args: list[str], out_dir: Path) -> dict[str, Any]:
    from bloodcls.cli import main

    base = ["test", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]
    main([*base, *args, "--report.output_dir", str(out_dir), "--report.print_table", "false"])
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {"acc": metrics["acc"], "balanced_acc": metrics["balanced_acc"], "n": metrics["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (with split.csv and checkpoints/)")
    parser.add_argument("--out", default=str(REPO / "bench/results/domain_shift"))
    parser.add_argument("--options", nargs="*", help="subset of the option names (default: all)")
    parser.add_argument("--in_domain", action="store_true", help="also evaluate each run on its own test split")
    ns = parser.parse_args()
    out = Path(ns.out)
    runs = [Path(r) for r in ns.runs]
    variant, reference = out / "variant", out / "reference"
    if not variant.is_dir():
        class_map = write_variant(split_rows(runs[0], "test"), variant, SHIFT, size=VARIANT_SIDE)
        (out / "map.yaml").write_text("".join(f"{k}: {v}\n" for k, v in sorted(class_map.items())))
    if not reference.is_dir():
        train = split_rows(runs[0], "train")
        reference.mkdir(parents=True)
        for path, _ in train[:: max(1, len(train) // N_REFERENCE)][:N_REFERENCE]:
            shutil.copy(path, reference / Path(path).name)
    chosen = {k: v for k, v in options(reference).items() if not ns.options or k in ns.options}
    results: list[dict[str, Any]] = []
    for run in runs:
        ckpt = run / "checkpoints" / "best.ckpt"
        label = run.parent.name if run.name.startswith("version_") else run.name
        if ns.in_domain:
            row = evaluate(ckpt, [], out / "reports" / label / "in_domain")
            results.append({"run": label, "data": "own test split", "option": "none", **row})
        for name, transform in chosen.items():
            args = ["--data.root", str(variant), "--class_map", str(out / "map.yaml")]
            args += ["--data.eval_transform", transform if isinstance(transform, str) else json.dumps(transform)]
            row = evaluate(ckpt, args, out / "reports" / label / name)
            results.append({"run": label, "data": "shifted variant", "option": name, **row})
            print(json.dumps(results[-1]), flush=True)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else []
    results = [
        r
        for r in previous
        if (r["run"], r["data"], r["option"]) not in {(x["run"], x["data"], x["option"]) for x in results}
    ] + results
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("| run | data | eval option | acc | balanced acc |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['data']} | {r['option']} | {r['acc']:.4f} | {r['balanced_acc']:.4f} |")


if __name__ == "__main__":
    main()
