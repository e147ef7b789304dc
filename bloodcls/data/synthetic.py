"""Procedural, seeded synthetic blood-smear crops of the five white-cell subtypes (the embedded default dataset):
whole datasets in memory, or written as an ImageFolder tree. The drawing is in ``synthetic_cells``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bloodcls.data.synthetic_cells import SYNTHETIC_CLASSES, check_size, render_cell

__all__ = ["SYNTHETIC_CLASSES", "generate_dataset", "render_cell", "write_image_folder"]

_IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def generate_dataset(n_per_class: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images and (N,) int64 labels, N = 5 * n_per_class, sorted by class.

    Image i of class c is drawn from ``default_rng([seed, c, i])`` only, so a smaller dataset is a per-class
    prefix of a larger one with the same seed and size.
    """
    if n_per_class < 0:
        raise ValueError(f"synthetic: n_per_class must be >= 0, got {n_per_class}")
    if seed < 0:
        raise ValueError(f"synthetic: seed must be >= 0 (numpy SeedSequence), got {seed}")
    check_size(size)
    n_cls = len(SYNTHETIC_CLASSES)
    images = np.empty((n_cls * n_per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_cls, dtype=np.int64), n_per_class)
    for label in range(n_cls):
        for i in range(n_per_class):
            images[label * n_per_class + i] = render_cell(label, np.random.default_rng([seed, label, i]), size)
    return images, labels


def write_image_folder(
    root: str | Path, n_per_class: int, size: int = 64, seed: int = 0, ext: str = "png"
) -> list[Path]:
    """Write an ImageFolder tree root/<class>/<class>_<i>.<ext> (png or jpg) and return the file paths.

    Used by tests and demos. Indices are zero-padded to at least four digits so that lexical order equals
    generation order; the paths come back sorted by class, then index.
    """
    key = ext.lower().lstrip(".")
    if key not in _IMAGE_FORMATS:
        raise ValueError(f"synthetic: ext must be one of {sorted(_IMAGE_FORMATS)}, got {ext!r}")
    images, labels = generate_dataset(n_per_class, size=size, seed=seed)
    root = Path(root)
    width = max(4, len(str(max(n_per_class - 1, 0))))
    # JPEG at high quality: lossy like real exports, but not so lossy that the granules vanish.
    options = {"quality": 95} if _IMAGE_FORMATS[key] == "JPEG" else {}
    paths: list[Path] = []
    for name in SYNTHETIC_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = SYNTHETIC_CLASSES[int(label)]
        path = root / name / f"{name}_{k % n_per_class:0{width}d}.{key}"
        Image.fromarray(image).save(path, format=_IMAGE_FORMATS[key], **options)
        paths.append(path)
    return paths
