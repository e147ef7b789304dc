"""``bloodcls export``: a checkpoint to ONNX with its preprocessing built in, plus an ONNX Runtime parity check on
the run's held-out test split.

The exported graph's contract (also stored in the model's metadata and in ``<output>.json``):

- input ``images``: uint8, (batch, 3, S, S), RGB, channel-first, S = the run's ``data.image_size``; the batch
  dimension is dynamic. Crop and resize outside the graph as in training: the central ``data.center_crop`` of each
  side (``preprocess`` in the metadata), resized to S. Give it the pixels as decoded (0..255): scaling and
  normalisation are inside the graph, exactly as in training (``Classifier.preprocess``).
- output ``probabilities``: float32, (batch, K), softmax over the classes in ``class_names`` order.

    bloodcls export --ckpt_path RUN/checkpoints/best.ckpt --format onnx [--output FILE.onnx] [--check]
        [--tta none|d4] [--ensemble CKPT [CKPT ...]]

``--tta d4`` puts the eight views into the graph (8 forwards per image); ``--ensemble`` exports one graph that
averages the probabilities of ``--ckpt_path``'s model and the listed ones (each with its own normalisation,
temperature and TTA). Both are recorded in the metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, get_args

import torch

from bloodcls.checkpoints import load_checkpoint
from bloodcls.commands.common import debug, fail, quiet_third_party_noise, user_errors
from bloodcls.commands.onnx_graph import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    parity_check,
    preprocess_text,
)
from bloodcls.errors import UserInputError
from bloodcls.io import write_json

PROG = "bloodcls export"
FORMATS = ("onnx",)


def default_output(ckpt_path: Path) -> Path:
    """``RUN/export/<checkpoint name>.onnx`` for a run's checkpoint, else next to the checkpoint file."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent / "export" / f"{ckpt_path.stem}.onnx"
    return ckpt_path.with_suffix(".onnx")


def read_checkpoint(ckpt_path: Path) -> dict[str, Any]:
    """The checkpoint's contents (loaded with ``weights_only=True``: never runs code from the file), or a one-line
    error when the file is missing, unsafe, or not a bloodcls (Lightning) checkpoint."""
    checkpoint = load_checkpoint(ckpt_path, "--ckpt_path")
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UserInputError(f"--ckpt_path {ckpt_path}: not a bloodcls (Lightning) checkpoint")
    if not isinstance(checkpoint.get("datamodule_hyper_parameters", {}).get("image_size"), int):
        raise UserInputError(f"--ckpt_path {ckpt_path}: the checkpoint does not record data.image_size")
    return checkpoint


def load_classifier(ckpt_path: Path) -> Any:
    """The strategy LightningModule of a bloodcls checkpoint in eval mode on the CPU, with the training-speed options
    off: never compiled, plain convolutions (an exporter and ONNX Runtime optimise those best)."""
    from bloodcls.inference.ensemble import load_member

    return load_member(ckpt_path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a checkpoint with its preprocessing: uint8 (B, 3, S, S) RGB -> class probabilities.",
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, metavar="CKPT", help="a bloodcls checkpoint")
    parser.add_argument("--format", default="onnx", help="export format (supported: onnx)")
    parser.add_argument("--output", metavar="FILE", help="default: RUN/export/<checkpoint name>.onnx")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"ONNX Runtime parity check on the run's test split (max |p_onnx - p_torch| <= {DEFAULT_TOLERANCE})",
    )
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="parity tolerance")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=256, help="check batch size")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch threads (default: torch's)")
    parser.add_argument("--data_root", "--data-root", default=None, help="the data, if it moved since training")
    add_inference_options(parser)
    return parser


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``--tta`` and ``--ensemble``, as ``bloodcls test`` / ``predict`` take them."""
    from bloodcls.inference.settings import TTAMode

    modes = list(get_args(TTAMode))
    parser.add_argument(
        "--tta", choices=modes, default=None, help="test-time augmentation in the graph; default: the checkpoint's"
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="CKPT",
        help="more checkpoints of the same classes and image size: one graph averaging all members' probabilities",
    )


def load_exported(ckpt_path: Path, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The module to export (one classifier, or an ``Ensemble`` of ``--ckpt_path`` and ``--ensemble``) and the
    member paths; members of other classes or image sizes are refused in one line."""
    from bloodcls.inference.ensemble import Ensemble, check_compatible, load_member, set_tta

    paths = [str(ckpt_path), *[str(p) for p in args.ensemble]]
    checkpoints = [read_checkpoint(Path(p)) for p in paths]
    check_compatible(
        paths,
        [c["hyper_parameters"].get("class_names") for c in checkpoints],
        [int(c["datamodule_hyper_parameters"]["image_size"]) for c in checkpoints],
        [float(c["datamodule_hyper_parameters"].get("center_crop", 1.0)) for c in checkpoints],
    )
    model = load_classifier(ckpt_path)
    if args.tta is not None:
        set_tta(model, args.tta)
    if not args.ensemble:
        return model, paths
    return Ensemble([model, *[load_member(p, args.tta) for p in paths[1:]]]).eval(), paths


def members_of(model: Any) -> list[Any]:
    """The classifiers an exported module holds: an ``Ensemble``'s members, or the classifier itself."""
    return list(model.members) if hasattr(model, "members") else [model]


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    """Validate, export, optionally check; returns what is written to ``<output>.json``."""
    if args.format not in FORMATS:
        raise UserInputError(f"--format {args.format}: unsupported (supported: {', '.join(FORMATS)})")
    ckpt_path = Path(args.ckpt_path)
    if args.batch_size < 1:
        raise UserInputError(f"--batch_size {args.batch_size}: expected at least 1")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    data_hparams = read_checkpoint(ckpt_path)["datamodule_hyper_parameters"]
    image_size = int(data_hparams["image_size"])
    center_crop = float(data_hparams.get("center_crop", 1.0))
    model, paths = load_exported(ckpt_path, args)
    from bloodcls.inference.ensemble import describe_members, ensemble_review_threshold

    members = describe_members(paths, members_of(model))
    first = members_of(model)[0]
    review_threshold = ensemble_review_threshold(first, len(members))
    output = Path(args.output) if args.output else default_output(ckpt_path)
    contract = {
        "input": f"{INPUT_NAME}: uint8 (batch, 3, {image_size}, {image_size}) RGB, 0..255 (normalised inside)",
        "output": f"{OUTPUT_NAME}: float32 (batch, {first.num_classes}) softmax probabilities",
        "preprocess": preprocess_text(image_size, center_crop),
    }
    metadata = {
        "bloodcls.class_names": json.dumps(list(first.class_names)),
        "bloodcls.image_size": str(image_size),
        "bloodcls.center_crop": str(center_crop),
        "bloodcls.preprocess": contract["preprocess"],
        "bloodcls.input": contract["input"],
        "bloodcls.output": contract["output"],
        "bloodcls.checkpoint": str(ckpt_path),
        # Which models and test-time augmentation the graph holds (temperature is inside it too).
        "bloodcls.tta": json.dumps(sorted({m["tta"] for m in members})),
        "bloodcls.members": json.dumps(members),
        "bloodcls.review_threshold": json.dumps(review_threshold),  # flag cells below it for review; null: none
    }
    start = time.perf_counter()
    export_onnx(model, output, image_size, metadata)
    record: dict[str, Any] = {
        "onnx": str(output),
        "checkpoint": str(ckpt_path),
        "class_names": list(first.class_names),
        "image_size": image_size,
        "center_crop": center_crop,
        "members": members,
        "review_threshold": review_threshold,
        **contract,
        "export_s": round(time.perf_counter() - start, 2),
    }
    print(f"{PROG}: wrote {output} ({output.stat().st_size / 2**20:.1f} MiB; {contract['input']} -> {OUTPUT_NAME})")
    if args.check:
        result = parity_check(model, output, ckpt_path, args.batch_size, args.tolerance, threads, args.data_root)
        record["parity"] = asdict(result)
        print(
            f"{PROG}: parity on {result.n_images} test images: max |p_onnx - p_torch| = {result.max_abs_diff:.2e} "
            f"(tolerance {result.tolerance:g}) {'OK' if result.passed else 'FAILED'}; ONNX Runtime "
            f"{result.ort_images_per_s:.0f} images/s, PyTorch {result.torch_images_per_s:.0f} images/s "
            f"(batch {result.batch_size}, {result.threads} threads); ONNX accuracy {result.ort_accuracy:.4f}"
        )
    write_json(Path(f"{output}.json"), record)
    return record


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bloodcls export``: bad input exits 2 with one line; a failed parity check exits 1."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet_third_party_noise()
    try:
        with user_errors(PROG):
            record = run_export(args)
    except ImportError as err:
        if debug():
            raise
        fail(PROG, f"{err.name or err}: not installed; install the export extra: pip install 'bloodcls[export]'")
    parity = record.get("parity")
    if parity is not None and not parity["passed"]:
        fail(
            PROG,
            f"parity check failed: max |p_onnx - p_torch| = {parity['max_abs_diff']:.2e} > {parity['tolerance']:g}",
            code=1,
        )
