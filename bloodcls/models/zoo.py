"""The model zoo: importing this module registers every bloodcls network from the literature into timm.

Registered names: ``bloodcls_vgg10``, ``bloodcls_cnn7``, ``bloodcls_cnn3``, ``hybrid_inception_xception``,
``bloodcls_unet_cls``, ``bloodcls_capsnet``, ``bloodcls_rnn``, ``bloodcls_dbn``.
"""

from __future__ import annotations

from bloodcls.models import capsnet, dbn, hybrid, paper_cnns, recurrent, unet, vgg10

ZOO_MODELS: tuple[str, ...] = (
    "bloodcls_vgg10",
    "bloodcls_cnn7",
    "bloodcls_cnn3",
    "hybrid_inception_xception",
    "bloodcls_unet_cls",
    "bloodcls_capsnet",
    "bloodcls_rnn",
    "bloodcls_dbn",
)

__all__ = ["ZOO_MODELS", "capsnet", "dbn", "hybrid", "paper_cnns", "recurrent", "unet", "vgg10"]
