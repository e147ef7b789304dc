"""bloodcls: blood-cell classifiers from few labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bloodcls.api import BloodModel, Predictions, load_model

__all__ = ["BloodModel", "Predictions", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy: `import bloodcls` (and the console script) must not import torch; the API loads it on first use.
    if name in __all__:
        from bloodcls import api

        return getattr(api, name)
    raise AttributeError(f"module 'bloodcls' has no attribute {name!r}")
