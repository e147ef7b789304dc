"""BloodMNIST as in-memory arrays, read through medmnist so file names and class names match upstream."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOODMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)
_FLAG = "bloodmnist"
_SPLITS: tuple[str, ...] = ("train", "val", "test")

# medmnist's label names are descriptive sentences for some classes; we use short, filesystem- and
# plot-friendly names. Only label 3 differs today ("immature granulocytes(myelocytes, ...)").
_SHORT_NAME_PREFIXES: dict[str, str] = {"immature granulocytes": "ig"}


@dataclass(frozen=True)
class ArrayDataset:
    """A whole labelled dataset held in memory, with medmnist's official split kept alongside."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    ids: list[str]  # stable identifiers, e.g. "bloodmnist_64/train/17"
    official_split: np.ndarray  # (N,) str: "train" / "val" / "test"

    def __len__(self) -> int:
        return len(self.labels)


def _short_name(long_name: str) -> str:
    for prefix, short in _SHORT_NAME_PREFIXES.items():
        if long_name.lower().startswith(prefix):
            return short
    return long_name.strip().lower()


def bloodmnist_class_names() -> list[str]:
    """Short class names in medmnist's label order (index i is label i)."""
    import medmnist

    labels: dict[str, str] = medmnist.INFO[_FLAG]["label"]
    return [_short_name(labels[str(i)]) for i in range(len(labels))]


def bloodmnist_filename(size: int) -> str:
    """The file medmnist expects in its root for this size, e.g. bloodmnist.npz / bloodmnist_64.npz."""
    if size not in BLOODMNIST_SIZES:
        raise ValueError(
            f"bloodmnist: unsupported size {size}; expected one of {', '.join(map(str, BLOODMNIST_SIZES))}"
        )
    return f"{_FLAG}.npz" if size == 28 else f"{_FLAG}_{size}.npz"


def _to_rgb(images: np.ndarray, path: Path, key: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, 1) -> (N, H, W, 3); RGB passes through untouched."""
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: {key} has dtype {images.dtype}; expected uint8")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W, 1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: {key} has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)  # (N, H, W, 3)
    return images


def load_bloodmnist(root: str | Path, size: int = 28) -> ArrayDataset:
    """Load all three official BloodMNIST splits from `root` (already downloaded) into one ArrayDataset."""
    import medmnist  # lazy: imports torch

    root = Path(root)
    path = root / bloodmnist_filename(size)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; fetch it with `bloodcls download bloodmnist --dest {root} --size {size}`"
        )

    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    splits: list[np.ndarray] = []
    for split in _SPLITS:
        try:
            ds = medmnist.BloodMNIST(split=split, root=str(root), size=size, download=False, as_rgb=True)
        except KeyError as exc:
            raise ValueError(f"{path}: missing array {exc}; expected {split}_images and {split}_labels") from exc
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ValueError(
                f"{path}: unreadable ({exc}); delete it and re-run "
                f"`bloodcls download bloodmnist --dest {root} --size {size}`"
            ) from exc
        # as_rgb only affects medmnist's per-item PIL path; the raw arrays we read still need converting.
        split_images = _to_rgb(np.asarray(ds.imgs), path, f"{split}_images")
        split_labels = np.asarray(ds.labels).reshape(-1).astype(np.int64)  # stored as (N, 1)
        if len(split_labels) != len(split_images):
            raise ValueError(
                f"{path}: {split}_labels has {len(split_labels)} entries but {split}_images has "
                f"{len(split_images)}; expected one label per image"
            )
        images.append(split_images)
        labels.append(split_labels)
        ids.extend(f"{_FLAG}_{size}/{split}/{i}" for i in range(len(split_labels)))
        splits.append(np.full(len(split_labels), split, dtype="<U5"))

    class_names = bloodmnist_class_names()
    all_labels = np.concatenate(labels)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= len(class_names)):
        raise ValueError(
            f"{path}: labels range {all_labels.min()}..{all_labels.max()}; "
            f"expected 0..{len(class_names) - 1} ({len(class_names)} classes)"
        )
    return ArrayDataset(
        images=np.concatenate(images),
        labels=all_labels,
        class_names=class_names,
        ids=ids,
        official_split=np.concatenate(splits),
    )
