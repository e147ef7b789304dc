"""Networks only (no training logic): timm backbones plus bloodcls models registered into timm's registry."""

from bloodcls.models.factory import available_backbones, create_backbone, pretrained_input_size

__all__ = ["available_backbones", "create_backbone", "pretrained_input_size"]
