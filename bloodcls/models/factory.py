"""One door for every network: timm's ``create_model`` for timm and bloodcls-registered backbones, with
clear errors for unknown names and an offline-friendly ``pretrained`` path (local file or URL)."""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import GroupNorm
from torch import nn

import bloodcls.models.zoo  # noqa: F401  (imports every bloodcls network, registering it into timm)
from bloodcls.checkpoints import load_checkpoint
from bloodcls.errors import MissingPathError, UserInputError

# Weights formats that are not pickles (nothing to unpickle): safetensors, numpy archives.
NON_PICKLE_SUFFIXES = (".safetensors", ".npz")


def available_backbones(pattern: str = "*") -> list[str]:
    return timm.list_models(pattern)


def pretrained_input_size(name: str) -> int | None:
    """Side of the square input ``name``'s pretrained weights were trained at (timm's pretrained config), or
    None for an unknown name or a config without one. Non-square inputs report their height."""
    if not timm.is_model(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-2]) if size else None


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `timm.list_models()`"
    raise UserInputError(f"model.backbone: unknown backbone '{name}'{hint}")


def _weights_overlay(weights: str) -> dict[str, Any]:
    """timm pretrained-config overlay that points its loader at a local file or a URL instead of the hub."""
    if "://" in weights:
        # hf_hub_id=None makes timm fall through to its URL loader (torch.hub cache under $TORCH_HOME).
        return {"url": weights, "hf_hub_id": None, "file": None, "source": ""}
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingPathError(f"model.pretrained_weights: {path} does not exist")
    if path.suffix not in NON_PICKLE_SUFFIXES:
        # timm loads it with weights_only=True too; checked here for a one-line error naming the key.
        load_checkpoint(path, "model.pretrained_weights")
    return {"file": str(path), "source": ""}


def _read_weights(path: Path) -> dict[str, Any]:
    """A weights file's tensors: safetensors, or a (weights-only) torch pickle, unwrapped from the usual containers
    (``state_dict``, ``model``, ``teacher`` -- DINO-style training checkpoints keep the backbone under ``teacher``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = load_checkpoint(path, "model.pretrained_weights")
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"model.pretrained_weights: {path} holds no state dict of tensors")
    return dict(state)


def load_local_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into a timm ``model`` through the architecture's own checkpoint filter (timm's
    ``checkpoint_filter_fn`` of the model's module: e.g. ViTs map the original DINOv2 layout -- ``mask_token``,
    ``register_tokens`` -- and resample position embeddings to the model's input size). The classifier may be
    missing or shaped for other classes (it is kept as initialised); any other missing or unexpected key is a
    one-line error listing the first ones."""
    import importlib

    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingPathError(f"model.pretrained_weights: {file} does not exist")
    state = _read_weights(file)
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if callable(filter_fn):
        try:
            state = filter_fn(state, model)
        except (KeyError, RuntimeError, ValueError, AttributeError) as err:
            raise UserInputError(
                f"model.pretrained_weights: {file} does not fit {type(model).__name__} ({type(err).__name__}: {err})"
            ) from None
    own = model.state_dict()
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    head_ptrs = {t.data_ptr() for t in classifier.state_dict().values()} if isinstance(classifier, nn.Module) else set()
    head_keys = {k for k, v in own.items() if v.data_ptr() in head_ptrs and v.numel()}
    state = {k: v for k, v in state.items() if not (k in head_keys and v.shape != own[k].shape)}
    missing = [k for k in own if k not in state and k not in head_keys]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise UserInputError(
            f"model.pretrained_weights: {file} does not fit {type(model).__name__}: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=False)
    return model


def create_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    pretrained_weights: str | None = None,
    drop_rate: float = 0.0,
    in_chans: int = 3,
    norm_layer: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create ``name`` with a ``num_classes`` head.

    ``pretrained=True`` loads timm's published weights (needs the hub); ``pretrained_weights`` (a local
    ``.pth`` / ``.safetensors`` file or an http(s) URL) loads those instead, which is how offline machines
    use pretrained networks. The classifier is re-initialised when the class count differs.

    ``norm_layer`` (``backbone_kwargs: {norm_layer: groupnorm}``): replace every BatchNorm2d of the network by
    that normalisation (see ``replace_batch_norm``), so it does not depend on the batch statistics of the training
    domain. Works for any architecture, since the swap happens after construction.
    """
    _check_name(name)
    if num_classes < 2:
        raise UserInputError(f"model.num_classes={num_classes}: a classifier needs at least 2 classes")
    if norm_layer is not None:
        _norm_key(norm_layer)  # a typo fails before any weights are fetched
    create_kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if drop_rate:
        create_kwargs["drop_rate"] = drop_rate
    if pretrained_weights is not None and "://" not in pretrained_weights:
        # Local files: loaded here, through the architecture's checkpoint filter, with key-level errors.
        return load_local_weights(timm.create_model(name, pretrained=False, **create_kwargs), pretrained_weights)
    if pretrained_weights is not None:
        create_kwargs["pretrained_cfg_overlay"] = _weights_overlay(pretrained_weights)
        pretrained = True
    try:
        model = timm.create_model(name, pretrained=pretrained, **create_kwargs)
        return model if norm_layer is None else replace_batch_norm(model, norm_layer)
    except pickle.UnpicklingError:
        # A downloaded file whose pickle needs non-allow-listed globals: torch refused it (weights_only=True).
        raise UserInputError(
            f"model.pretrained_weights: refusing to unpickle arbitrary objects from {pretrained_weights or name}"
            " (weights files may hold only tensors and plain data)"
        ) from None
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        source = pretrained_weights or "the model hub"
        raise UserInputError(
            f"model.pretrained: could not load weights for '{name}' from {source} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download the weights elsewhere and "
            "pass model.pretrained_weights=/path/to/weights"
        ) from err


NORM_LAYERS = ("batchnorm", "groupnorm", "layernorm")
MAX_GROUPS = 32  # GroupNorm's default group count (Wu & He 2018)


def _groups(channels: int) -> int:
    """The largest divisor of ``channels`` not above ``MAX_GROUPS`` (GroupNorm needs an exact division)."""
    return max(g for g in range(1, min(MAX_GROUPS, channels) + 1) if channels % g == 0)


def _norm_key(norm_layer: str) -> str:
    key = str(norm_layer).replace("_", "").lower()
    if key not in NORM_LAYERS:
        raise UserInputError(f"model.backbone_kwargs.norm_layer={norm_layer!r}: expected one of {list(NORM_LAYERS)}")
    return key


def replace_batch_norm(model: nn.Module, norm_layer: str) -> nn.Module:
    """Swap every ``BatchNorm2d`` of ``model`` for ``norm_layer`` in place (``groupnorm``: up to 32 groups;
    ``layernorm``: one group, i.e. LayerNorm over C, H, W; ``batchnorm``: unchanged). The new layers are freshly
    initialised, so pretrained normalisation statistics are not kept."""
    key = _norm_key(norm_layer)
    if key == "batchnorm":
        return model
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                channels = int(child.num_features)
                groups = _groups(channels) if key == "groupnorm" else 1
                setattr(parent, child_name, GroupNorm(channels, num_groups=groups, eps=child.eps, affine=child.affine))
    return model
