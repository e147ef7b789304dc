"""The Python API for notebooks: ``load_model(checkpoint or [checkpoints]).predict(images)`` and ``.explain(images)``,
with each checkpoint's own preprocessing (decoding, resize, normalisation, test-time augmentation, temperature)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bloodcls.errors import UserInputError

if TYPE_CHECKING:
    from bloodcls.inference.ensemble import Ensemble

# An input whose shorter side is under this fraction of the model's image size is upscaled a lot: worth a warning.
SMALL_INPUT_FRACTION = 0.5


@dataclass
class Predictions:
    """What ``BloodModel.predict`` returns, one row per decodable input, in input order.

    Attributes:
        ids: the file path of each image, or ``image_<i>`` (position in the input) for in-memory images.
        classes: the predicted class name of each image.
        probabilities: float32 (N, K), columns in ``class_names`` order; averaged over TTA views and members.
        confidence: float32 (N,), the top probability.
        needs_review: per image, confidence below the referral threshold; ``None`` without a threshold.
        skipped: ``(input, reason)`` for inputs that could not be decoded (a warning was issued).
    """

    ids: list[str]
    classes: list[str]
    probabilities: np.ndarray
    confidence: np.ndarray
    class_names: list[str]
    needs_review: list[bool] | None
    skipped: list[tuple[str, str]]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image (id, class, confidence, needs_review, prob_<class>...), e.g. for ``pandas.DataFrame``."""
        out = []
        for i, image_id in enumerate(self.ids):
            row: dict[str, Any] = {"id": image_id, "class": self.classes[i], "confidence": float(self.confidence[i])}
            if self.needs_review is not None:
                row["needs_review"] = self.needs_review[i]
            row.update({f"prob_{n}": float(p) for n, p in zip(self.class_names, self.probabilities[i], strict=True)})
            out.append(row)
        return out


@dataclass
class Explanations:
    """What ``BloodModel.explain`` returns: CAMs (N, S, S) in [0, 1], uint8 overlays (N, S, S, 3), the inputs as
    the network saw them (N, S, S, 3), and the class each map explains."""

    ids: list[str]
    cams: np.ndarray
    overlays: np.ndarray
    images: np.ndarray
    targets: list[str]


class BloodModel:
    """One checkpoint or an ensemble of checkpoints of the same classes and image size, ready for inference."""

    def __init__(
        self,
        ensemble: Ensemble,
        paths: list[str],
        image_size: int,
        eval_transform: Any,
        device: str,
        center_crop: float = 1.0,
    ):
        self.ensemble = ensemble
        self.paths = paths
        self.image_size = image_size
        self.center_crop = center_crop  # the training data's data.center_crop: new images are cropped alike
        self.device = device
        self._eval_transform = eval_transform
        from bloodcls.inference.ensemble import ensemble_review_threshold  # torch-heavy: imported on use

        first: Any = self.members[0]
        self.class_names: list[str] = [str(c) for c in first.class_names]
        self.review_threshold = ensemble_review_threshold(first, len(paths))

    @property
    def members(self) -> list[Any]:
        return list(self.ensemble.members)

    def __repr__(self) -> str:
        tta = sorted({m.inference.tta for m in self.members})
        return (
            f"BloodModel({len(self.paths)} checkpoint(s), {len(self.class_names)} classes, {self.image_size} px, "
            f"tta={'/'.join(tta)}, review_threshold={self.review_threshold})"
        )

    # ------------------------------------------------------------------ inputs
    def load_images(self, images: Any) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """uint8 (N, S, S, 3) at the model's size (decoded and resized as the training data were, then the run's
        eval transform), their ids, and the inputs that could not be decoded."""
        from bloodcls.data.images import (
            BadImageError,
            _to_rgb_array,
            decode_image,
            draft_size_for,
            read_bytes,
            resize_square,
        )
        from bloodcls.data.sources.folder import list_predict_folder
        from bloodcls.data.transforms import apply_transform

        items = _as_list(images)
        arrays: list[np.ndarray] = []
        ids: list[str] = []
        skipped: list[tuple[str, str]] = []
        small: list[str] = []
        for position, item in enumerate(items):
            sources: list[tuple[str, Any]]
            if isinstance(item, str | Path):
                path = Path(item).expanduser()
                if path.is_dir():
                    sources = [(p, p) for p in list_predict_folder(path, key=str(path)).ids]
                elif not path.exists():
                    raise UserInputError(f"{path}: no such file or folder")
                else:
                    sources = [(str(path), str(path))]
            else:
                sources = [(f"image_{position}", item)]
            for image_id, source in sources:
                try:
                    if isinstance(source, str):
                        draft = draft_size_for(self.image_size, self.center_crop)
                        raw = decode_image(read_bytes(source), source, draft_size=draft)
                    elif isinstance(source, np.ndarray):
                        raw = _array_to_rgb(source, image_id)
                    elif hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
                        raw = _to_rgb_array(source)
                    else:
                        raise BadImageError(f"{image_id}: a {type(source).__name__}, not an image (path, PIL, array)")
                except BadImageError as err:
                    skipped.append((image_id, str(err)))
                    continue
                if min(raw.shape[:2]) * self.center_crop < SMALL_INPUT_FRACTION * self.image_size:
                    small.append(f"{image_id} ({raw.shape[1]}x{raw.shape[0]})")
                resized = resize_square(raw, self.image_size, self.center_crop)
                arrays.append(apply_transform(self._eval_transform, resized))
                ids.append(image_id)
        if small:
            warnings.warn(
                f"bloodcls: {len(small)} image(s) far smaller than the model's {self.image_size} px input, upscaled "
                f"(predictions may be unreliable): {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}",
                stacklevel=3,
            )
        if skipped:
            warnings.warn(
                f"bloodcls: skipped {len(skipped)} undecodable input(s): {skipped[0][1]}"
                + (" ..." if len(skipped) > 1 else ""),
                stacklevel=3,
            )
        if not arrays:
            raise UserInputError("no decodable images to classify")
        return np.stack(arrays), ids, skipped

    # ------------------------------------------------------------------ inference
    def probabilities(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """float32 (N, K) of uint8 (N, S, S, 3) pixels, through every member's ``eval_probabilities``."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
                out.append(self.ensemble(batch.permute(0, 3, 1, 2).to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

    def predict(self, images: Any, batch_size: int = 64) -> Predictions:
        """Classify image files, a folder (recursively), PIL images or RGB / grey arrays (uint8, or floats in
        [0, 1]); one item or a list of them. Undecodable files are skipped with a warning."""
        pixels, ids, skipped = self.load_images(images)
        probs = self.probabilities(pixels, batch_size)
        top = probs.argmax(axis=1)
        confidence = probs.max(axis=1).astype(np.float32)
        threshold = self.review_threshold
        return Predictions(
            ids=ids,
            classes=[self.class_names[k] for k in top],
            probabilities=probs,
            confidence=confidence,
            class_names=list(self.class_names),
            needs_review=None if threshold is None else [bool(c < threshold) for c in confidence],
            skipped=skipped,
        )

    def explain(self, images: Any, method: str = "gradcam", target: str | None = None, member: int = 0) -> Explanations:
        """Class activation maps (pytorch-grad-cam: gradcam, gradcam++, eigencam, scorecam) of ``member``'s network
        (one network: CAMs are not averaged over an ensemble, nor over TTA views) for the predicted class, or the
        class named by ``target``."""
        import torch

        from bloodcls.evaluation.cam import compute_cams, find_target_layers, overlay

        if target is not None and target not in self.class_names:
            raise UserInputError(f"target={target!r}: not a class of this model ({', '.join(self.class_names)})")
        if not 0 <= member < len(self.paths):
            raise UserInputError(f"member={member}: this model has {len(self.paths)} checkpoint(s)")
        pixels, ids, _ = self.load_images(images)
        model = self.members[member]
        if target is None:
            targets = self.probabilities(pixels).argmax(axis=1).tolist()
        else:
            targets = [self.class_names.index(target)] * len(ids)
        layers = find_target_layers(model, self.image_size)
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        cams = compute_cams(model, batch, targets, method, layers)  # (N, S, S)
        overlays = np.stack([overlay(p, c) for p, c in zip(pixels, cams, strict=True)])
        return Explanations(ids, cams, overlays, pixels, [self.class_names[t] for t in targets])


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)  # a batch (N, H, W, C)
    if isinstance(images, list | tuple):
        return list(images)
    return [images]


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) or (3, H, W) uint8 (or floats in [0, 1]) -> (H, W, 3) uint8."""
    from bloodcls.data.images import BadImageError

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise BadImageError(f"{name}: array of shape {array.shape} is not an (H, W[, 3]) image")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) or not (np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0):
            raise BadImageError(f"{name}: expected uint8 pixels or floats in [0, 1], got {a.dtype}")
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def load_model(
    checkpoints: str | Path | Sequence[str | Path],
    tta: str | None = None,
    device: str = "cpu",
    review_threshold: float | None = None,
) -> BloodModel:
    """A checkpoint (or a list: an ensemble averaging their probabilities) ready to ``predict`` and ``explain``.

    Checkpoints are read with ``weights_only=True`` (never unpickling code). ``tta``: ``none`` / ``d4``, default
    each checkpoint's own. ``review_threshold``: flag predictions below this confidence (default: the
    checkpoint's, for a single checkpoint; an ensemble has none unless given).
    """
    from bloodcls.checkpoints import load_checkpoint
    from bloodcls.data.transforms import build_transform
    from bloodcls.inference import InferenceSettings
    from bloodcls.inference.ensemble import Ensemble, check_compatible, load_member

    paths = [str(checkpoints)] if isinstance(checkpoints, str | Path) else [str(p) for p in checkpoints]
    if not paths:
        raise UserInputError("load_model: no checkpoint given")
    contents = [load_checkpoint(p, "load_model") for p in paths]
    data = [c.get("datamodule_hyper_parameters") or {} for c in contents]
    if not all(isinstance(d.get("image_size"), int) for d in data):
        raise UserInputError(f"load_model: {paths[0]} is not a bloodcls checkpoint (no data.image_size recorded)")
    names = [(c.get("hyper_parameters") or {}).get("class_names") for c in contents]
    crops = [float(d.get("center_crop", 1.0)) for d in data]
    check_compatible(paths, names, [int(d["image_size"]) for d in data], crops)
    del contents
    if tta is not None:
        InferenceSettings(tta=tta)  # type: ignore[arg-type]  # one-line error for an unknown mode
    members = [load_member(p, tta).to(device) for p in paths]
    image_size = int(data[0]["image_size"])
    model = BloodModel(
        Ensemble(members).eval(),
        paths,
        image_size,
        build_transform(data[0].get("eval_transform") or "eval", image_size),
        device,
        crops[0],
    )
    if review_threshold is not None:
        InferenceSettings(review_threshold=review_threshold)  # one-line error outside [0, 1]
        model.review_threshold = review_threshold
    return model
