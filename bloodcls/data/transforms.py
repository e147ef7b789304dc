"""Albumentations pipelines by name (``eval`` / ``weak`` / ``strong`` / ``randaugment`` / ``robust``) or a YAML list,
uint8 images; list items may also name bloodcls's own ``ZoomOut``, ``ZoomIn`` and ``StainNormalize``.

Pipelines keep images uint8: conversion to float and normalisation happen on the training device inside the
strategy, which is cheaper than shipping float tensors through the loader workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import numpy as np

from bloodcls.data.stain_transforms import CUSTOM_TRANSFORMS
from bloodcls.errors import UserInputError

# A name of a preset, or a list whose items are preset names or {"name": <albumentations class>, **kwargs}.
TransformSpec = str | list[str | dict[str, Any]]


def _geometric(image_size: int) -> list[A.BasicTransform]:
    # Blood-cell crops have no canonical orientation, so all flips and 90-degree turns are label preserving.
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.Affine(
            scale=(0.9, 1.1),
            translate_percent=(-0.0625, 0.0625),
            rotate=(-15, 15),
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.5,
        ),
    ]


def _photometric(image_size: int) -> list[A.BasicTransform]:
    # Stain and scanner variation between labs is the main domain shift for smear images.
    hole = max(2, image_size // 8)
    return [
        A.OneOf(
            [
                A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=15, p=1.0),
                A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.04, p=1.0),
            ],
            p=0.8,
        ),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.CLAHE(clip_limit=2.0, tile_grid_size=(4, 4), p=0.2),
        A.CoarseDropout(
            num_holes_range=(1, 3),
            hole_height_range=(hole, 2 * hole),
            hole_width_range=(hole, 2 * hole),
            p=0.3,
        ),
    ]


# RandAugment (Cubuk et al. 2020) as FixMatch uses it: N = 2 ops drawn at random from this list, each at a random
# magnitude up to the maximum below (FixMatch's RA variant), then Cutout of a square of up to half the side.
RANDAUGMENT_N = 2


def _randaugment_ops(image_size: int) -> list[A.BasicTransform]:
    reflect = cv2.BORDER_REFLECT_101
    return [
        A.NoOp(p=1.0),  # RandAugment's "Identity"
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.5, contrast_limit=0.0, p=1.0),  # Brightness
        A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.5, p=1.0),  # Contrast
        A.ColorJitter(brightness=0.0, contrast=0.0, saturation=0.5, hue=0.0, p=1.0),  # Color
        A.Sharpen(alpha=(0.2, 0.9), lightness=(1.0, 1.0), p=1.0),
        A.Posterize(num_bits=(4, 8), p=1.0),
        A.Solarize(threshold_range=(0.5, 1.0), p=1.0),
        A.Affine(rotate=(-30, 30), border_mode=reflect, p=1.0),  # Rotate
        A.Affine(shear={"x": (-17, 17), "y": (0, 0)}, border_mode=reflect, p=1.0),  # ShearX (0.3 rad)
        A.Affine(shear={"x": (0, 0), "y": (-17, 17)}, border_mode=reflect, p=1.0),  # ShearY
        A.Affine(translate_percent={"x": (-0.3, 0.3), "y": (0, 0)}, border_mode=reflect, p=1.0),  # TranslateX
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.3, 0.3)}, border_mode=reflect, p=1.0),  # TranslateY
    ]


def _randaugment(image_size: int) -> list[A.BasicTransform]:
    hole = max(2, image_size // 2)  # Cutout: one square of up to half the side, always (FixMatch's RA + Cutout)
    return [
        *_geometric(image_size)[:3],  # flips and 90-degree turns: free, label-preserving for blood cells
        A.SomeOf(_randaugment_ops(image_size), n=RANDAUGMENT_N, replace=False, p=1.0),
        A.CoarseDropout(
            num_holes_range=(1, 1), hole_height_range=(1, hole), hole_width_range=(1, hole), fill=127, p=1.0
        ),
    ]


def _robust(image_size: int) -> list[A.BasicTransform]:
    # Another lab's images: other stain (HED jitter), other cell scale (tight or wide crops), other focus.
    return [
        *_geometric(image_size)[:3],
        A.OneOf(
            [
                A.Affine(scale=(0.6, 1.0), border_mode=cv2.BORDER_REFLECT_101, p=1.0),  # zoom out: smaller cell
                A.RandomResizedCrop(size=(image_size, image_size), scale=(0.25, 1.0), ratio=(0.8, 1.25), p=1.0),
            ],
            p=0.8,
        ),
        A.HEStain(method="random_preset", intensity_scale_range=(0.6, 1.4), intensity_shift_range=(-0.3, 0.3), p=0.8),
        A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=30, val_shift_limit=20, p=0.5),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7), p=1.0), A.Defocus(radius=(1, 3), p=1.0)], p=0.5),
    ]


PRESETS: dict[str, Callable[[int], list[A.BasicTransform]]] = {
    "eval": lambda size: [],
    "weak": _geometric,
    "strong": lambda size: [*_geometric(size), *_photometric(size)],
    # The strong view of FixMatch / FlexMatch / FreeMatch: random N of M ops, then Cutout.
    "randaugment": _randaugment,
    # Training-time robustness to other labs: HED stain jitter, scale and blur augmentation.
    "robust": _robust,
}


def _build_item(item: str | dict[str, Any], image_size: int) -> list[A.BasicTransform]:
    if isinstance(item, str):
        if item not in PRESETS:
            raise UserInputError(f"unknown transform preset '{item}', expected one of {sorted(PRESETS)}")
        return PRESETS[item](image_size)
    if not isinstance(item, dict) or "name" not in item:
        raise UserInputError(f"transform entry {item!r} must be a preset name or a mapping with a 'name' key")
    kwargs = {k: v for k, v in item.items() if k != "name"}
    name = str(item["name"])
    cls = CUSTOM_TRANSFORMS.get(name) or getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        raise UserInputError(f"transform '{name}' is not an albumentations transform")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"transform '{name}' with arguments {kwargs}: {err}") from None
    # albumentations only warns about unknown arguments; a typo in a config must not be silently ignored.
    for warning in caught:
        if "not valid" in str(warning.message):
            raise UserInputError(f"transform '{name}': {warning.message}")
    return [transform]


def build_transform(spec: TransformSpec, image_size: int) -> A.Compose:
    """Build an albumentations ``Compose`` from a preset name or a YAML list (see ``TransformSpec``)."""
    items = [spec] if isinstance(spec, str) else list(spec)
    transforms: list[A.BasicTransform] = []
    for item in items:
        transforms.extend(_build_item(item, image_size))
    # Keep the training resolution whatever the user's pipeline does (e.g. a RandomResizedCrop of another size).
    transforms.append(A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA))
    return A.Compose(transforms)


def apply_transform(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    """Apply a pipeline to one (H, W, 3) uint8 image and return a contiguous uint8 image."""
    out = transform(image=image)["image"]
    return np.ascontiguousarray(out, dtype=np.uint8)
