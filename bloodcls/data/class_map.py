"""External-lab evaluation: a class map from another dataset's folder names to a model's classes, and a source that
serves that dataset under the model's class indices (the whole dataset is the evaluation set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from lightning.pytorch.utilities import rank_zero_warn

from bloodcls.data.sources import source_for_root
from bloodcls.data.sources.base import DataSource, SourceListing
from bloodcls.errors import MissingPathError, UserInputError

ClassMapSpec = str | dict[str, str | None]
BALANCED_ACC_NOTE = "balanced_acc is the mean recall over the model classes present in the external data"


def load_class_map(spec: ClassMapSpec, key: str = "data.class_map") -> dict[str, str | None]:
    """``{external folder: model class}`` from a YAML file or a mapping; a ``null`` value excludes that folder
    on purpose (a class the model does not know)."""
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise MissingPathError(f"{key}: {path} does not exist")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserInputError(f"{key}: {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not spec:
        raise UserInputError(f"{key}: expected a non-empty mapping 'EXTERNAL_FOLDER: model_class', got {spec!r}")
    out: dict[str, str | None] = {}
    for external, target in spec.items():
        if target is not None and not isinstance(target, str):
            raise UserInputError(f"{key}: {external}: expected a model class name or null, got {target!r}")
        out[str(external)] = target
    return out


@dataclass
class MappedClasses:
    """What a class map did to an external dataset (goes into data_report.json and metrics.json)."""

    class_map: dict[str, str | None]
    model_classes: list[str]
    mapped: dict[str, str] = field(default_factory=dict)  # external folder -> model class, for folders present
    unmapped: list[str] = field(default_factory=list)  # external folders not in the map, or mapped to null
    absent_in_data: list[str] = field(default_factory=list)  # map keys with no such folder
    model_classes_without_images: list[str] = field(default_factory=list)
    n_excluded_images: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "mapped": self.mapped,
            "excluded_external_classes": self.unmapped,
            "map_keys_not_in_data": self.absent_in_data,
            "model_classes_without_images": self.model_classes_without_images,
            "n_excluded_images": self.n_excluded_images,
            "balanced_acc": BALANCED_ACC_NOTE,
        }


def check_targets(class_map: dict[str, str | None], model_classes: list[str], key: str = "data.class_map") -> None:
    """Every target of the map is a class of the model (a typo must not silently drop a class)."""
    unknown = sorted({t for t in class_map.values() if t is not None and t not in model_classes})
    if unknown:
        raise UserInputError(
            f"{key}: maps to {', '.join(unknown)}, which the model does not have (its classes: "
            f"{', '.join(model_classes)}); use null to exclude an external class"
        )


def map_listing(
    listing: SourceListing, class_map: dict[str, str | None], model_classes: list[str]
) -> tuple[SourceListing, MappedClasses]:
    """The listing's rows whose folder maps to a model class, labelled with model-class indices."""
    check_targets(class_map, model_classes)
    info = MappedClasses(class_map, list(model_classes))
    external = listing.class_names
    info.absent_in_data = sorted(k for k in class_map if k not in external)
    index = {name: i for i, name in enumerate(model_classes)}
    lut = np.full(len(external), -1, dtype=np.int64)
    for i, name in enumerate(external):
        target = class_map.get(name)
        if target is None:
            info.unmapped.append(name)
        else:
            info.mapped[name] = target
            lut[i] = index[target]
    new_labels = lut[listing.labels] if len(listing.labels) else listing.labels
    keep = np.flatnonzero(new_labels >= 0)
    if len(keep) == 0:
        raise UserInputError(
            f"data.class_map: none of the external classes ({', '.join(external)}) maps to a model class "
            f"({', '.join(model_classes)}); nothing to evaluate"
        )
    info.n_excluded_images = len(listing.labels) - len(keep)
    present = set(new_labels[keep].tolist())
    info.model_classes_without_images = [c for i, c in enumerate(model_classes) if i not in present]
    mapped = SourceListing(
        class_names=list(model_classes),
        ids=[listing.ids[i] for i in keep],
        labels=new_labels[keep],
        arrays=None if listing.arrays is None else listing.arrays[keep],
        skipped=list(listing.skipped),
    )
    return mapped, info


def warn_mapping(info: MappedClasses) -> None:
    """The warnings an external evaluation owes its user: what was left out, and what cannot be measured."""
    if info.unmapped:
        rank_zero_warn(
            f"data.class_map: external classes {', '.join(info.unmapped)} are not mapped to a model class; their "
            f"{info.n_excluded_images} images are excluded"
        )
    if info.absent_in_data:
        rank_zero_warn(f"data.class_map: {', '.join(info.absent_in_data)} named in the map but not found in data.root")
    if info.model_classes_without_images:
        rank_zero_warn(
            f"data.class_map: model classes {', '.join(info.model_classes_without_images)} have no external images; "
            "their recall is not measured and balanced accuracy averages over the classes present"
        )


class MappedSource(DataSource):
    """Another dataset (any source with class folders) seen through a class map, labelled in the model's classes.

    Args:
        inner: the external dataset's source.
        class_map: ``{external class: model class or null}`` (or a YAML file of it).
        model_classes: the model's classes in label order.
    """

    def __init__(self, inner: DataSource, class_map: ClassMapSpec, model_classes: list[str]) -> None:
        self.inner = inner
        self.class_map = load_class_map(class_map)
        self.model_classes = list(model_classes)
        check_targets(self.class_map, self.model_classes)
        self.mapping: MappedClasses | None = None

    @property
    def root(self) -> str | None:  # type: ignore[override]
        return self.inner.root

    @property
    def kind(self) -> str:
        return f"{self.inner.kind}+class_map"

    def class_names(self) -> list[str]:
        return list(self.model_classes)

    def listing(self, image_size: int) -> SourceListing:
        listing, self.mapping = map_listing(self.inner.listing(image_size), self.class_map, self.model_classes)
        warn_mapping(self.mapping)
        return listing

    def config(self) -> dict[str, Any]:
        return self.inner.config()  # a checkpoint records the data it was trained on, never this view


def resolve_source(
    root: str | None, source: DataSource | None, class_map: ClassMapSpec | None, model_classes: list[str] | None
) -> DataSource:
    """The source a datamodule reads: ``source`` (re-rooted at ``root`` when both are given), else the one ``root``
    implies; with a ``class_map``, the dataset under ``root`` seen in the model's classes (external evaluation)."""
    if class_map is None:
        if source is None:
            return source_for_root(root)
        return source.with_root(root) if root is not None else source
    if not model_classes:
        raise UserInputError(
            "data.class_map needs data.model_classes (the model's classes); `bloodcls test --ckpt_path CKPT "
            "--class_map MAP` reads them from the checkpoint"
        )
    # Another dataset: whatever source the model was trained from, the external data is the folder under root.
    inner = source_for_root(root) if root is not None or source is None else source
    return MappedSource(inner, class_map, model_classes)
