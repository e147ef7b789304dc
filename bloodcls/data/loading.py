"""From a source listing to usable images: decode once (cache), hash, drop bad files and duplicates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bloodcls.data import splits as S
from bloodcls.data.cache import CacheMode, DecodedImages, decode_files, hash_arrays, resize_arrays
from bloodcls.data.sources import SourceListing, list_predict_folder
from bloodcls.errors import UserInputError
from bloodcls.io import path_text

MAX_WARNED_FILES = 10


@dataclass(frozen=True)
class DecodeSettings:
    """How files become arrays: training resolution, cache mode and place, pixel limit, decode threads."""

    image_size: int
    cache: CacheMode = "disk"
    cache_dir: str | None = None
    max_image_pixels: int = 100_000_000
    decode_workers: int | None = None
    center_crop: float = 1.0  # central fraction of each side kept before resizing (data.center_crop)

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise UserInputError(f"data.image_size={self.image_size} must be >= 8")
        if not 0 < self.center_crop <= 1:
            raise UserInputError(
                f"data.center_crop={self.center_crop} must be in (0, 1] (the kept fraction of each side)"
            )


@dataclass
class LoadedData:
    """A source after decoding, validation and deduplication."""

    listing: SourceListing
    images: np.ndarray  # (N, S, S, 3) uint8 over all listed rows (bad rows are zeros)
    hashes: list[str]
    usable: np.ndarray  # (N,) bool: decoded fine and kept by deduplication
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dedupe: S.DedupeResult | None = None
    cache_file: str | None = None


@dataclass
class FolderImages:
    """An unlabeled folder (predict or extra unlabeled images) decoded at the training resolution."""

    listing: SourceListing
    images: np.ndarray
    ok: np.ndarray  # (n_ok,) rows that decoded
    skipped: list[tuple[str, str]]


def _decode_files(ids: list[str], settings: DecodeSettings) -> DecodedImages:
    return decode_files(
        ids,
        settings.image_size,
        mode=settings.cache,
        cache_dir=settings.cache_dir,
        max_pixels=settings.max_image_pixels,
        workers=settings.decode_workers,
        crop=settings.center_crop,
    )


def _decode(
    listing: SourceListing, settings: DecodeSettings
) -> tuple[np.ndarray, list[str], dict[int, str], str | None]:
    if listing.arrays is not None:
        hashes = hash_arrays(listing.arrays)
        images = resize_arrays(listing.arrays, settings.image_size, settings.decode_workers, settings.center_crop)
        return images, hashes, {}, None
    decoded = _decode_files(listing.ids, settings)
    cache_file = str(decoded.cache_file) if decoded.cache_file else None
    return decoded.images, decoded.hashes, decoded.errors, cache_file


def load_listing(listing: SourceListing, settings: DecodeSettings, every_class: bool = True) -> LoadedData:
    """Decode ``listing``, warn about skipped files, deduplicate by content and check every class is usable
    (``every_class`` False, for evaluating on another dataset: at least one image is)."""
    images, hashes, errors, cache_file = _decode(listing, settings)
    skipped = list(listing.skipped) + [(listing.ids[i], reason) for i, reason in sorted(errors.items())]
    warn_skipped(skipped)
    decoded_ok = np.ones(len(listing.ids), dtype=bool)
    decoded_ok[list(errors)] = False
    ok_rows = np.flatnonzero(decoded_ok)
    dedupe = S.deduplicate([hashes[i] for i in ok_rows], listing.labels[ok_rows])
    usable = np.zeros(len(listing.ids), dtype=bool)
    usable[ok_rows[dedupe.keep]] = True
    # Translate group member positions back to listing rows for the report.
    dedupe.groups = [[int(ok_rows[i]) for i in g] for g in dedupe.groups]
    dedupe.conflicts = [[int(ok_rows[i]) for i in g] for g in dedupe.conflicts]
    if dedupe.groups:
        rank_zero_info(
            f"deduplication: {len(dedupe.groups)} groups of identical images, "
            f"{len(dedupe.conflicts)} with conflicting labels; {int(decoded_ok.sum() - usable.sum())} "
            "copies not used"
        )
    for group in dedupe.conflicts:
        names = ", ".join(f"{listing.ids[i]} ({listing.class_names[listing.labels[i]]})" for i in group)
        rank_zero_warn(f"identical images filed under different classes, all dropped: {names}")
    data = LoadedData(listing, images, hashes, usable, skipped, dedupe, cache_file)
    if every_class:
        check_classes(data)
    elif not data.usable.any():
        raise UserInputError("data.root: no usable images to evaluate")
    return data


def load_folder(root: str, settings: DecodeSettings, key: str, listed_in: str) -> FolderImages:
    """Decode every image under ``root`` (no labels); bad files are skipped with a warning."""
    listing = list_predict_folder(root, key=key)
    decoded = _decode_files(listing.ids, settings)
    skipped = [(listing.ids[i], reason) for i, reason in sorted(decoded.errors.items())]
    if len(skipped) == len(listing.ids):
        first, reason = skipped[0]
        example = reason if first in reason else f"{first}: {reason}"
        raise UserInputError(
            f"{key}: none of the {len(skipped)} image files under {root} could be read (e.g. {path_text(example)})"
        )
    warn_skipped(skipped, listed_in)
    return FolderImages(listing, decoded.images, np.flatnonzero(decoded.ok), skipped)


def warn_skipped(skipped: list[tuple[str, str]], listed_in: str = "data_report.json") -> None:
    """One warning per skipped file (the first few) and a count."""
    if not skipped:
        return
    for name, reason in skipped[:MAX_WARNED_FILES]:
        rank_zero_warn(path_text(f"skipped {reason}" if name in reason else f"skipped {name}: {reason}"))
    more = len(skipped) - MAX_WARNED_FILES
    tail = f" ({more} more not shown)" if more > 0 else ""
    files = "file" if len(skipped) == 1 else "files"
    rank_zero_warn(f"{len(skipped)} {files} skipped as unusable{tail}; all are listed in {listed_in}")


def check_classes(data: LoadedData) -> None:
    """At least two classes, each with at least one usable image."""
    names = data.listing.class_names
    if len(names) < 2:
        raise UserInputError(f"data.root: found {len(names)} class ({', '.join(names) or 'none'}); need at least 2")
    counts = np.bincount(data.listing.labels[data.usable], minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserInputError(f"data.root: class(es) {', '.join(empty)} have no usable images")
