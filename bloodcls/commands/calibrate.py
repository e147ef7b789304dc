"""``bloodcls calibrate``: fit a checkpoint's temperature on its run's validation split, choose the confidence below
which cells are referred to a human, and store both in the checkpoint (``checkpoint["bloodcls"]["inference"]``),
where ``test``, ``predict``, ``export`` and the Python API read them. The weights are not touched.

    bloodcls calibrate --ckpt_path RUN/checkpoints/best.ckpt [--target_accuracy 0.99] [--tta none|d4]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloodcls.commands.common import OneLineParser, quiet_third_party_noise, user_errors
from bloodcls.errors import UserInputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from bloodcls.inference import InferenceSettings

PROG = "bloodcls calibrate"
TTA_CHOICES = ("none", "d4")


@dataclass
class CalibrationResult:
    """What a calibration stored in a checkpoint, and the numbers behind it."""

    ckpt_path: Path
    settings: InferenceSettings
    message: str  # the before / after table and the referral line, as printed


def validation_logits(
    model: Any, ckpt_path: Path, tta: str, batch_size: int, device: torch.device, data_root: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain logits (V, N, K) of every test-time augmentation view of the run's validation split (restored from the
    checkpoint, as ``bloodcls test`` restores its test split) and the labels (N,)."""
    import torch

    from bloodcls.data import BloodCellDataModule
    from bloodcls.inference import tta_views

    overrides: dict[str, Any] = {"num_workers": 0, "eval_batch_size": batch_size}
    if data_root is not None:
        overrides["root"] = data_root
    datamodule = BloodCellDataModule.load_from_checkpoint(ckpt_path, weights_only=True, **overrides)
    datamodule.setup("validate")
    if len(datamodule.rows_of("val")) == 0:
        raise UserInputError(
            f"--ckpt_path {ckpt_path}: the run has no validation images (data.val_fraction=0?); calibration is fitted "
            "on the validation split"
        )
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    model = model.to(device).eval()
    with torch.inference_mode():
        for batch in datamodule.val_dataloader():
            images = batch["image"].to(device)
            logits.append(torch.stack([model(view).float().cpu() for view in tta_views(images, tta)]))
            labels.append(batch["label"])
    return torch.cat(logits, dim=1), torch.cat(labels)


def fit_settings(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    tta: str,
    target_accuracy: float | None,
) -> tuple[InferenceSettings, list[str]]:
    """The inference settings fitted on validation logits (V, N, K), and the lines that report them."""
    import numpy as np

    from bloodcls.inference import InferenceSettings
    from bloodcls.inference import calibration as C

    labels = np.asarray(labels)
    temperature = C.fit_temperature(logits, labels)
    before = C.calibration_summary(C.tempered_probabilities(logits, 1.0), labels)
    probs = C.tempered_probabilities(logits, temperature)
    after = C.calibration_summary(probs, labels)
    fitted_on: dict[str, Any] = {
        "split": "val",
        "n_images": int(labels.size),
        "tta": tta,  # the probabilities the threshold was chosen on; set_tta drops it for another mode
        "before": before,
        "after": after,
    }
    lines = [
        f"temperature {temperature:.4f} fitted on {labels.size} validation images (tta {tta})",
        f"{'':<10}{'NLL':>9}{'ECE':>9}{'Brier':>9}{'Accuracy':>10}",
        *(
            f"{name:<10}{m['nll']:>9.4f}{100 * m['ece']:>8.2f}%{m['brier']:>9.4f}{100 * m['acc']:>9.2f}%"
            for name, m in (("before", before), ("after", after))
        ),
    ]
    threshold = None
    if target_accuracy is not None:
        choice = C.choose_review_threshold(probs, labels, target_accuracy)
        if choice is None:
            best, coverage = C.best_accuracy_point(probs, labels)
            fitted_on["review"] = {"target_accuracy": target_accuracy, "reachable": False}
            lines.append(
                f"target accuracy {100 * target_accuracy:.2f}% is not reached on validation at any confidence "
                f"(best: {100 * best:.2f}% at coverage {100 * coverage:.1f}%); no review threshold is stored"
            )
        else:
            threshold = choice.threshold
            fitted_on["review"] = {**choice.to_dict(), "reachable": True}
            lines.append(
                f"review threshold {threshold:.4f}: cells below it are referred; on validation "
                f"{100 * choice.coverage:.1f}% are accepted at accuracy {100 * choice.accuracy:.2f}% "
                f"(target {100 * target_accuracy:.2f}%)"
            )
    settings = InferenceSettings(
        temperature=temperature,
        review_threshold=threshold,
        target_accuracy=target_accuracy,
        tta=tta,  # type: ignore[arg-type]  # a str; InferenceSettings checks it is a TTA mode
        fitted_on=fitted_on,
    )
    return settings, lines


def write_inference_settings(ckpt_path: Path, settings: InferenceSettings) -> None:
    """Replace ``checkpoint["bloodcls"]["inference"]`` in the file, atomically; everything else is kept as it is."""
    import torch

    from bloodcls.checkpoints import load_checkpoint
    from bloodcls.io import atomic_path

    checkpoint = load_checkpoint(ckpt_path, "--ckpt_path")
    checkpoint.setdefault("bloodcls", {})["inference"] = settings.to_dict()
    with atomic_path(ckpt_path) as tmp:
        torch.save(checkpoint, tmp)


def calibrate_checkpoint(
    ckpt_path: str | Path,
    target_accuracy: float | None = None,
    tta: str | None = None,
    *,
    batch_size: int = 256,
    device: str | None = None,
    data_root: str | None = None,
) -> CalibrationResult:
    """Fit and store the inference settings of ``ckpt_path`` (the command and ``CalibrateAfterFit`` share this).

    ``tta``: the test-time augmentation to calibrate for and store; ``None`` keeps the checkpoint's. ``device``:
    ``None`` picks CUDA when available."""
    import torch

    from bloodcls.commands.export import load_classifier, read_checkpoint

    if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
        raise UserInputError(f"--target_accuracy {target_accuracy}: expected a number in (0, 1]")
    if tta is not None and tta not in TTA_CHOICES:
        raise UserInputError(f"--tta {tta}: expected one of {', '.join(TTA_CHOICES)}")
    if batch_size < 1:
        raise UserInputError(f"--batch_size {batch_size}: expected at least 1")
    path = Path(ckpt_path)
    read_checkpoint(path)  # one-line errors for a missing, unsafe or foreign file
    model = load_classifier(path)
    mode = tta or model.inference.tta
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    logits, labels = validation_logits(model, path, mode, batch_size, target, data_root)
    settings, lines = fit_settings(logits, labels.numpy(), mode, target_accuracy)
    write_inference_settings(path, settings)
    lines.append(f"stored in {path} (checkpoint['bloodcls']['inference']; weights unchanged)")
    return CalibrationResult(path, settings, "\n".join(lines))


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Temperature scaling and a referral threshold, fitted on the run's validation split and stored "
        "in the checkpoint (used by test, predict and export).",
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", required=True, metavar="CKPT", help="a bloodcls checkpoint")
    parser.add_argument(
        "--target_accuracy",
        "--target-accuracy",
        type=float,
        default=None,
        metavar="ACC",
        help="choose the confidence below which cells are flagged needs_review so that the accepted validation "
        "cells reach this accuracy (e.g. 0.99); default: no referral threshold",
    )
    parser.add_argument(
        "--tta", default=None, metavar="none|d4", help="test-time augmentation to calibrate for (default: the stored)"
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=256, help="validation batch size")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--data_root", "--data-root", default=None, help="the data, if it moved since training")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``bloodcls calibrate``: bad input (no validation split, a bad target) exits 2 with one line."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet_third_party_noise()
    with user_errors(PROG):
        result = calibrate_checkpoint(
            args.ckpt_path,
            args.target_accuracy,
            args.tta,
            batch_size=args.batch_size,
            device=args.device,
            data_root=args.data_root,
        )
    print(f"{PROG}: {result.message}")
