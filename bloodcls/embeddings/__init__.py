"""Frozen backbones: embed images once into a content-addressed cache (``store``, ``extract``), then fit light heads
on the embeddings (``heads``); ``runner`` is ``bloodcls embed``'s work. Import the submodules directly."""
