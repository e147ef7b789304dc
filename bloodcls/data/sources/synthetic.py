"""The embedded procedural dataset (five white-cell subtypes) as a data source: no download, no root."""

from __future__ import annotations

from bloodcls.data.sources.base import DataSource, SourceListing
from bloodcls.errors import UserInputError


class SyntheticSource(DataSource):
    """Procedurally drawn white cells, generated at the training resolution.

    Args:
        per_class: images per class.
        seed: seed of the generator (the split has its own, ``data.split_seed``).
    """

    def __init__(self, per_class: int = 200, seed: int = 0) -> None:
        if per_class < 1:
            raise UserInputError(f"data.source.init_args.per_class={per_class} must be >= 1")
        self.per_class = per_class
        self.seed = seed

    @property
    def kind(self) -> str:
        return "synthetic"

    def class_names(self) -> list[str]:
        from bloodcls.data.synthetic import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)

    def listing(self, image_size: int) -> SourceListing:
        import numpy as np

        from bloodcls.data.synthetic import SYNTHETIC_CLASSES, generate_dataset

        images, labels = generate_dataset(self.per_class, size=image_size, seed=self.seed)
        counters: dict[int, int] = {}
        ids = []
        for label in labels.tolist():
            counters[label] = counters.get(label, -1) + 1
            ids.append(f"synthetic/{SYNTHETIC_CLASSES[label]}/{counters[label]}")
        return SourceListing(
            class_names=list(SYNTHETIC_CLASSES), ids=ids, labels=np.asarray(labels, dtype=np.int64), arrays=images
        )
