"""A backbone as strategies see it: timm's interface typed as a Protocol, and loading a backbone checkpoint."""

from __future__ import annotations

import copy
from typing import Protocol, cast

import torch
from torch import nn

from bloodcls.checkpoints import load_checkpoint
from bloodcls.errors import UserInputError


class Backbone(Protocol):
    """What strategies call on a backbone beyond ``forward`` (timm's interface; bloodcls's own nets follow it)."""

    num_features: int
    training: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def get_classifier(self) -> nn.Module: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...


def backbone(net: nn.Module) -> Backbone:
    """``net`` typed as a ``Backbone`` (nn.Module attribute access is untyped)."""
    return cast(Backbone, net)


def load_backbone_checkpoint(net: nn.Module, path: str) -> None:
    """Copy backbone weights from a Lightning checkpoint (``net.*`` keys) or a plain state dict into ``net``;
    tensors whose shape differs (a classifier for other classes) are left as initialised."""
    state = load_checkpoint(path, "model.backbone_checkpoint")  # weights_only: never runs code from the file
    state = state.get("state_dict", state)
    if not isinstance(state, dict):
        raise UserInputError(f"model.backbone_checkpoint: {path} holds no state dict")
    if any(k.startswith("net.") for k in state):
        state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserInputError(f"model.backbone_checkpoint: {path} has no weights matching backbone {type(net).__name__}")
    net.load_state_dict(usable, strict=False)


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` whose parameters take no gradient (EMA teachers and evaluation copies)."""
    copy_ = copy.deepcopy(net)
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_
