"""The exported ONNX graph: the wrapper that turns uint8 images into class probabilities, its export through
``torch.onnx`` (dynamo), the preprocessing a caller does before it, and the ONNX Runtime parity check on the run's
test split. ``bloodcls export`` (``bloodcls.commands.export``) is the command around them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
DEFAULT_TOLERANCE = 1e-4


class ProbabilitiesModel(nn.Module):
    """The exported function: uint8 images (B, 3, S, S) -> class probabilities (B, K), through the strategy's own
    ``eval_probabilities`` (so e.g. Mean Teacher exports its teacher when it evaluates with it, and the
    checkpoint's temperature and test-time augmentation are in the graph); an ``Ensemble`` averages its members'."""

    def __init__(self, classifier: Any) -> None:  # a Classifier or Ensemble (imported lazily: torch-free CLI start)
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.eval_probabilities(images)  # (B, K)


@dataclass
class ParityResult:
    """ONNX Runtime vs PyTorch on the test split."""

    n_images: int
    max_abs_diff: float
    tolerance: float
    passed: bool
    ort_accuracy: float
    ort_images_per_s: float
    torch_images_per_s: float
    batch_size: int
    threads: int


def preprocess_text(image_size: int, center_crop: float) -> str:
    """What a caller does to an image before the graph (the datamodule's decode step, which is not in it)."""
    crop = "the whole image" if center_crop == 1 else f"the central {center_crop:g} of each side (centre crop)"
    return f"RGB uint8; take {crop}; resize to {image_size} x {image_size} (area averaging when shrinking)"


def export_onnx(model: nn.Module, output: Path, image_size: int, metadata: dict[str, str]) -> Path:
    """Write ``model`` (uint8 (B, 3, S, S) -> probabilities) to ``output`` as one self-contained ONNX file."""
    import onnx  # noqa: F401  (a clear ImportError here names the missing extra, see main)

    wrapper = ProbabilitiesModel(model).eval()
    # Batch 2, not 1: torch.export specialises dimensions of size 0/1, which would pin the batch.
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    batch = torch.export.Dim("batch")
    output.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        wrapper,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"images": {0: batch}},
        dynamo=True,
        verbose=False,
    )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update(metadata)
    program.save(output, external_data=False)
    return output


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_check(
    model: nn.Module,
    onnx_path: Path,
    ckpt_path: Path,
    batch_size: int,
    tolerance: float,
    threads: int,
    data_root: str | None = None,
) -> ParityResult:
    """Run the run's test split (restored from the checkpoint, as ``bloodcls test`` does) through PyTorch and ONNX
    Runtime; compare probabilities and time both."""
    from bloodcls.data import BloodCellDataModule

    overrides: dict[str, Any] = {"num_workers": 0, "eval_batch_size": batch_size}
    if data_root is not None:
        overrides["root"] = data_root
    datamodule = BloodCellDataModule.load_from_checkpoint(ckpt_path, weights_only=True, **overrides)
    datamodule.setup("test")
    session = _ort_session(onnx_path, threads)
    wrapper = ProbabilitiesModel(model).eval()
    max_diff, correct, n = 0.0, 0, 0
    ort_s = torch_s = 0.0
    warm = False
    for batch in datamodule.test_dataloader():
        images = batch["image"].numpy()  # (B, 3, S, S) uint8
        if not warm:  # first-call allocations and kernel selection are not throughput
            session.run([OUTPUT_NAME], {INPUT_NAME: images[:2]})
            with torch.inference_mode():
                wrapper(batch["image"][:2])
            warm = True
        start = time.perf_counter()
        (ort_probs,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})  # (B, K)
        ort_s += time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            torch_probs = wrapper(batch["image"]).numpy()  # (B, K)
        torch_s += time.perf_counter() - start
        max_diff = max(max_diff, float(np.abs(ort_probs - torch_probs).max()))
        correct += int((ort_probs.argmax(axis=1) == batch["label"].numpy()).sum())
        n += len(images)
    return ParityResult(
        n_images=n,
        max_abs_diff=max_diff,
        tolerance=tolerance,
        passed=max_diff <= tolerance,
        ort_accuracy=correct / max(n, 1),
        ort_images_per_s=n / ort_s if ort_s else float("nan"),
        torch_images_per_s=n / torch_s if torch_s else float("nan"),
        batch_size=batch_size,
        threads=threads,
    )
