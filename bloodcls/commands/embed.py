"""``bloodcls embed``: run a frozen backbone once over a dataset's splits and write the embeddings (with content
hashes, labels and subsets) through the embedding cache, which every later run with the same backbone reuses.

    bloodcls embed --ckpt_path RUN/checkpoints/best.ckpt [--splits train val test] [--tta d4] [--output DIR]
    bloodcls embed --backbone NAME [--pretrained_weights FILE] (--config FIT.yaml | --data_root DIR [--image_size S])
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bloodcls.commands.common import OneLineParser, quiet_third_party_noise, user_errors
from bloodcls.errors import UserInputError

PROG = "bloodcls embed"


def _from_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """The run's classifier and datamodule with the run's split restored (as ``bloodcls test`` does)."""
    from bloodcls.commands.export import load_classifier, read_checkpoint
    from bloodcls.data import BloodCellDataModule

    ckpt = Path(args.ckpt_path)
    read_checkpoint(ckpt)
    overrides: dict[str, Any] = {"num_workers": 0}
    if args.data_root is not None:
        overrides["root"] = args.data_root
    datamodule = BloodCellDataModule.load_from_checkpoint(ckpt, weights_only=True, **overrides)
    output = ckpt.parent.parent / "embeddings" if ckpt.parent.name == "checkpoints" else ckpt.parent / "embeddings"
    return load_classifier(ckpt), datamodule, output


def _from_backbone(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """A named architecture (optionally with local weights) and the data of ``--config`` or ``--data_root``."""
    from bloodcls.data import BloodCellDataModule
    from bloodcls.models.factory import pretrained_input_size
    from bloodcls.strategies.base import Classifier

    if args.config:
        from bloodcls.tuning.config import resolve_config

        init_args = dict(resolve_config([a for c in args.config for a in ("--config", c)])["data"]["init_args"])
        if args.data_root is not None:
            init_args["root"] = args.data_root
        if args.image_size is not None:
            init_args["image_size"] = args.image_size
    elif args.data_root is not None:
        init_args = {"root": args.data_root, "image_size": args.image_size or pretrained_input_size(args.backbone)}
    else:
        raise UserInputError("--backbone needs the data: --config FIT.yaml or --data_root DIR")
    init_args["num_workers"] = 0
    datamodule = BloodCellDataModule(**init_args)
    try:
        kwargs = json.loads(args.backbone_kwargs) if args.backbone_kwargs else {}
    except ValueError:
        raise UserInputError(f"--backbone_kwargs {args.backbone_kwargs}: not a JSON object") from None
    model = Classifier(
        num_classes=datamodule.num_classes,
        backbone=args.backbone,
        pretrained_weights=args.pretrained_weights,
        backbone_kwargs=kwargs,
    )
    return model, datamodule, Path("embeddings") / args.backbone


def run_embed(args: argparse.Namespace) -> Path:
    """Embed and write; returns the output folder."""
    from bloodcls.embeddings.runner import embed_splits

    if (args.ckpt_path is None) == (args.backbone is None):
        raise UserInputError("give exactly one of --ckpt_path RUN/... and --backbone NAME")
    if args.pretrained_weights is not None and args.backbone is None:
        raise UserInputError("--pretrained_weights goes with --backbone (a checkpoint holds its own weights)")
    model, datamodule, default = _from_checkpoint(args) if args.ckpt_path else _from_backbone(args)
    output = Path(args.output) if args.output else default
    result = embed_splits(model, datamodule, output, args.splits, args.tta, args.cache_dir, args.dtype)
    print(
        f"{PROG}: {result.n_rows} embeddings of width {result.width} ({result.n_new} computed, the rest from the "
        f"cache {result.cache}) in {result.output}"
    )
    return result.output


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Embed a dataset's splits with a frozen backbone (cached).")
    parser.add_argument("--ckpt_path", "--ckpt-path", metavar="CKPT", help="a bloodcls checkpoint (its split too)")
    parser.add_argument("--backbone", metavar="NAME", help="a timm / bloodcls architecture instead of a checkpoint")
    parser.add_argument("--pretrained_weights", "--pretrained-weights", metavar="FILE", help="local weights file")
    parser.add_argument("--backbone_kwargs", metavar="JSON", help="e.g. '{\"img_size\": 224}' for a ViT")
    parser.add_argument("--config", action="append", metavar="FIT.yaml", help="fit config(s) naming the data")
    parser.add_argument("--data_root", "--data-root", default=None, help="the data (or where it moved since training)")
    parser.add_argument("--image_size", type=int, default=None, help="default: the config's, else the weights'")
    parser.add_argument("--splits", nargs="+", metavar="SPLIT", help="train unlabeled val test (default: all present)")
    parser.add_argument("--tta", choices=("none", "d4"), default="none", help="average features over d4 views")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--cache_dir", metavar="DIR", help="default: $BLOODCLS_CACHE/embeddings")
    parser.add_argument("--output", metavar="DIR", help="default: RUN/embeddings, or embeddings/<backbone>")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bloodcls embed``: bad input exits 2 with one line."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet_third_party_noise()
    with user_errors(PROG):
        run_embed(args)
