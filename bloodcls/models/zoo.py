"""The model zoo: importing this module registers every bloodcls network into timm; ``ZOO_MODELS`` names them.

A network is one module in this package that registers a ``bloodcls_*`` model with timm's ``@register_model``
(plus, for the benchmark and the tests, a ``configs/models/<name>.yaml``): every module here is imported below,
so nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import timm


def _import_every_module() -> None:
    """Import each module of ``bloodcls.models``: a network enters timm's registry when its module is imported."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")


_import_every_module()

# The quick-experiment CNNs of small_cnn.py (bloodcls_cnn_small / _tiny) are registered too, but they are demo
# and test networks, not networks from the blood-cell literature, and have no configs/models entry.
ZOO_MODELS: tuple[str, ...] = tuple(
    sorted(set(timm.list_models("bloodcls_*")) - set(timm.list_models(module="small_cnn")))
)

__all__ = ["ZOO_MODELS"]
