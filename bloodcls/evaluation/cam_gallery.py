"""The test report's CAM galleries: per class, the most confident correct cells and the most confident mistakes,
kept while the test runs (a few images per class, never the whole split) and explained with Grad-CAM at the end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcls.errors import UserInputError

KINDS = ("correct", "mistake")


@dataclass
class Candidate:
    """One kept test cell: its uint8 (3, H, W) image, the true and predicted class and the confidence."""

    confidence: float
    index: int
    label: int
    pred: int
    image: torch.Tensor


@dataclass
class GalleryCell:
    """One rendered gallery entry: the image | CAM pair (uint8 (H, 2W, 3)) and its caption facts."""

    kind: str
    label: int
    pred: int
    confidence: float
    sample: str
    pair: np.ndarray


@dataclass
class Gallery:
    """What the HTML report shows: the cells by (true class, kind), or why there are none."""

    cells: list[GalleryCell] = field(default_factory=list)
    message: str | None = None  # why there are no cells
    scope: str = ""  # where the cells come from, when not the whole test split


class GalleryCollector:
    """Keeps, per true class, the ``per_class`` most confident correct predictions and the ``per_class`` most
    confident wrong ones of this rank's test batches (images copied to the CPU, uint8)."""

    def __init__(self, per_class: int = 4) -> None:
        self.per_class = per_class
        self.kept: dict[tuple[int, str], list[Candidate]] = {}
        self.seen = 0

    def reset(self) -> None:
        self.kept = {}
        self.seen = 0

    def update(self, batch: Any, outputs: Any) -> None:
        """Merge one test batch (``image``, ``label``, ``index``) and its outputs (``probs``)."""
        if not isinstance(batch, dict) or not isinstance(outputs, dict) or "probs" not in outputs:
            return
        images = batch.get("image")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
            return  # only decoded uint8 images can be shown next to their CAM
        probs = outputs["probs"].detach().float().cpu()
        labels = torch.as_tensor(outputs["label"] if "label" in outputs else batch["label"]).cpu()
        index = torch.as_tensor(outputs["index"] if "index" in outputs else batch["index"]).cpu()
        confidence, pred = probs.max(dim=1)
        self.seen += len(labels)
        for c in labels.unique().tolist():
            for kind in KINDS:
                right = pred == labels
                chosen = (labels == c) & (right if kind == "correct" else ~right)
                rows = chosen.nonzero().flatten()
                if not len(rows):
                    continue
                top = rows[confidence[rows].argsort(descending=True)[: self.per_class]].tolist()
                kept = self.kept.setdefault((int(c), kind), [])
                kept += [
                    Candidate(
                        float(confidence[r]), int(index[r]), int(c), int(pred[r]), images[r].detach().cpu().clone()
                    )
                    for r in top
                ]
                kept.sort(key=lambda cand: -cand.confidence)
                del kept[self.per_class :]

    def candidates(self) -> list[Candidate]:
        """The kept cells, by class then kind (correct first), most confident first."""
        return [cand for key in sorted(self.kept, key=lambda k: (k[0], KINDS.index(k[1]))) for cand in self.kept[key]]


def build_gallery(
    collector: GalleryCollector, model: nn.Module, sample_ids: Sequence[str] | None, method: str = "gradcam"
) -> Gallery:
    """Grad-CAMs (of the predicted class: what made the network say so) of the kept cells, as image | overlay pairs.

    A network without a convolutional trunk (RNN, DBN, capsule), or no grad-cam package, gives a message instead.
    """
    cands = collector.candidates()
    if not cands:
        return Gallery(message="no test cells were kept for the gallery")
    try:
        from bloodcls.evaluation.cam import compute_cams, find_target_layers, side_by_side

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        # The test loop runs in inference mode; Grad-CAM needs autograd, and tensors made in inference mode
        # cannot be saved for backward, hence the clone outside it.
        with torch.inference_mode(False):
            images = torch.stack([c.image for c in cands]).clone().to(device)  # (M, 3, S, S) uint8
            was_training = model.training
            try:
                layers = find_target_layers(model, images.shape[-1])
                cams = compute_cams(model, images, [c.pred for c in cands], method, layers)  # (M, S, S)
            finally:
                model.train(was_training)
    except UserInputError as err:
        return Gallery(message=f"no CAM gallery: {err}")
    except ImportError as err:
        return Gallery(message=f"no CAM gallery: {err.name or err} is not installed (pip install 'bloodcls[explain]')")
    pixels = torch.stack([c.image for c in cands]).permute(0, 2, 3, 1).numpy()  # (M, S, S, 3)
    cells = []
    for i, cand in enumerate(cands):
        sample = sample_ids[cand.index] if sample_ids is not None and 0 <= cand.index < len(sample_ids) else ""
        kind = "correct" if cand.pred == cand.label else "mistake"
        pair = side_by_side(pixels[i], cams[i], min_size=96)
        cells.append(GalleryCell(kind, cand.label, cand.pred, cand.confidence, str(sample), pair))
    return Gallery(cells=cells)
