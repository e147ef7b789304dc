"""``bloodcls explain``: class activation maps (Grad-CAM and friends, through pytorch-grad-cam) of a checkpoint's
predictions on the run's test split or on a folder of images, as overlay PNGs plus ``explain.csv``.

    bloodcls explain --ckpt_path RUN/checkpoints/best.ckpt [--images DIR] [--method gradcam|gradcam++|eigencam|
        scorecam] [--output DIR] [--target pred|true|CLASS]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloodcls.commands.common import OneLineParser, debug, fail, quiet_third_party_noise, user_errors
from bloodcls.errors import UserInputError

if TYPE_CHECKING:
    import torch

PROG = "bloodcls explain"
CSV_HEADER = ("file", "overlay", "predicted", "confidence", "target", "true")


@dataclass
class Batch:
    """uint8 images (B, 3, S, S), their file ids, and their true labels (-1: unknown)."""

    images: torch.Tensor  # uint8 (B, 3, S, S)
    files: list[str]
    labels: list[int]


def default_output(ckpt_path: Path, method: str) -> Path:
    """``RUN/explain/<method>`` for a run's checkpoint, else ``explain_<method>`` next to the checkpoint file."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent / "explain" / method
    return ckpt_path.parent / f"explain_{method}"


def _batches(args: argparse.Namespace, ckpt_path: Path) -> Iterator[Batch]:
    """The run's test split (restored from the checkpoint, as ``bloodcls test`` does) or the images of
    ``--images``, decoded at the run's image size."""
    from bloodcls.data import BloodCellDataModule

    overrides: dict[str, Any] = {"num_workers": 0, "eval_batch_size": args.batch_size}
    if args.data_root is not None:
        overrides["root"] = args.data_root
    if args.images is not None:
        if not Path(args.images).exists():
            raise UserInputError(f"--images {args.images}: no such file or folder")
        overrides["predict_root"] = args.images
    datamodule = BloodCellDataModule.load_from_checkpoint(ckpt_path, weights_only=True, **overrides)
    if args.images is not None:
        datamodule.setup("predict")
        loader, ids = datamodule.predict_dataloader(), datamodule.predict_paths()
    else:
        datamodule.setup("test")
        loader, ids = datamodule.test_dataloader(), datamodule.sample_ids()
    for batch in loader:
        index = batch["index"].tolist()
        labels = batch["label"].tolist() if args.images is None else [-1] * len(index)
        yield Batch(batch["image"], [ids[i] for i in index], labels)


def _target_rule(target: str, class_names: list[str], has_labels: bool) -> int | None:
    """None for the predicted class, -1 for the true class, else the index of a named class."""
    if target == "pred":
        return None
    if target == "true":
        if not has_labels:
            raise UserInputError("--target true needs true labels: use it on the test split (without --images)")
        return -1
    if target not in class_names:
        raise UserInputError(f"--target {target}: not a class of this model (classes: {', '.join(class_names)})")
    return class_names.index(target)


def _png_name(position: int, file: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(file).stem)[:80] or "image"
    return f"{position:05d}_{stem}.png"


def run_explain(args: argparse.Namespace) -> Path:
    """Write one overlay PNG per image and ``explain.csv`` into the output folder; returns the CSV's path."""
    # Imported here, not at the top: `bloodcls explain --help` answers without loading torch.
    import torch
    from PIL import Image

    from bloodcls.commands.export import load_classifier, read_checkpoint
    from bloodcls.evaluation.cam import METHODS, compute_cams, find_target_layers, side_by_side
    from bloodcls.io import atomic_path, write_csv

    if args.method not in METHODS:
        raise UserInputError(f"--method {args.method}: unknown (expected one of: {', '.join(METHODS)})")
    if args.batch_size < 1:
        raise UserInputError(f"--batch_size {args.batch_size}: expected at least 1")
    if args.limit is not None and args.limit < 1:
        raise UserInputError(f"--limit {args.limit}: expected at least 1")
    ckpt_path = Path(args.ckpt_path)
    image_size = int(read_checkpoint(ckpt_path)["datamodule_hyper_parameters"]["image_size"])
    model = load_classifier(ckpt_path)
    class_names = [str(c) for c in model.class_names]
    rule = _target_rule(args.target, class_names, has_labels=args.images is None)
    layers = find_target_layers(model, image_size)  # before any data: a network without a trunk fails at once
    output = Path(args.output) if args.output else default_output(ckpt_path, args.method)
    output.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    for batch in _batches(args, ckpt_path):
        if args.limit is not None and len(rows) >= args.limit:
            break
        with torch.no_grad():
            probs = model(batch.images).float().softmax(dim=1)  # (B, K)
        confidence, predicted = probs.max(dim=1)
        if rule is None:
            targets = predicted.tolist()
        elif rule == -1:
            targets = batch.labels
        else:
            targets = [rule] * len(batch.files)
        cams = compute_cams(model, batch.images, targets, args.method, layers)  # (B, S, S)
        pixels = batch.images.permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) uint8
        for i, file in enumerate(batch.files):
            if args.limit is not None and len(rows) >= args.limit:
                break
            name = _png_name(len(rows), file)
            with atomic_path(output / name) as tmp:
                Image.fromarray(side_by_side(pixels[i], cams[i])).save(tmp, format="PNG")
            true = class_names[batch.labels[i]] if batch.labels[i] >= 0 else ""
            rows.append(
                [
                    file,
                    name,
                    class_names[int(predicted[i])],
                    f"{float(confidence[i]):.4f}",
                    class_names[targets[i]],
                    true,
                ]
            )
    if not rows:
        raise UserInputError("no decodable images to explain" + (f" in --images {args.images}" if args.images else ""))
    csv_path = write_csv(output / "explain.csv", CSV_HEADER, rows)
    print(f"{PROG}: {len(rows)} {args.method} overlays (image | CAM of the target class) and explain.csv in {output}")
    return csv_path


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description="Class activation maps of a checkpoint's predictions (pytorch-grad-cam)."
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, metavar="CKPT", help="a bloodcls checkpoint")
    parser.add_argument("--images", metavar="DIR", help="a folder (or file) of images; default: the run's test split")
    parser.add_argument(
        "--method", default="gradcam", metavar="METHOD", help="gradcam (default), gradcam++, eigencam or scorecam"
    )
    parser.add_argument("--output", metavar="DIR", help="default: RUN/explain/<method>")
    parser.add_argument(
        "--target",
        default="pred",
        metavar="pred|true|CLASS",
        help="the class whose evidence is shown: the predicted one (default), the true one (test split), or a name",
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=32, help="images per CAM batch")
    parser.add_argument("--limit", type=int, default=None, help="explain at most this many images")
    parser.add_argument("--data_root", "--data-root", default=None, help="the data, if it moved since training")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bloodcls explain``: bad input (a network without a convolutional trunk, an unknown
    class) exits 2 with one line."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet_third_party_noise()
    try:
        with user_errors(PROG):
            run_explain(args)
    except ImportError as err:
        if debug():
            raise
        fail(PROG, f"{err.name or err}: not installed; install the explain extra: pip install 'bloodcls[explain]'")
