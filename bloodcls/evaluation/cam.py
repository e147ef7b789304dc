"""Class activation maps through pytorch-grad-cam: the target layer of any zoo network, CAMs, and overlays."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcls.errors import UserInputError

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "eigencam", "scorecam")


def _cam_class(method: str) -> Callable[..., Any]:
    """The pytorch-grad-cam class of ``method`` (imported here: the ``explain`` extra is optional)."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM

    classes: dict[str, Callable[..., Any]] = {
        "gradcam": GradCAM,
        "gradcam++": GradCAMPlusPlus,
        "eigencam": EigenCAM,
        "scorecam": ScoreCAM,
    }
    if method not in classes:
        raise UserInputError(f"--method {method}: unknown (expected one of: {', '.join(METHODS)})")
    return classes[method]


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _trace_maps(net: nn.Module, x: torch.Tensor) -> tuple[list[tuple[nn.Module, torch.Tensor]], torch.Tensor]:
    """Every submodule whose output is a (B, C, H, W) float map during ``net.forward_features(x)``, in the order
    they finish (a block after its layers), and the features themselves."""
    maps: list[tuple[nn.Module, torch.Tensor]] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(module, nn.Identity):  # e.g. timm's norm_pre: the same tensor as the block before it
            return
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.is_floating_point():
            maps.append((module, output))

    handles = [m.register_forward_hook(hook) for m in net.modules() if m is not net]
    try:
        with torch.no_grad():
            features = net.forward_features(x)  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return maps, features


def _inside_a_pooled_block(net: nn.Module, maps: list[tuple[nn.Module, torch.Tensor]]) -> set[int]:
    """Modules nested in a block (not a plain ``nn.Sequential`` stage) whose output is 1 x 1: a bottleneck's first
    activation at 2 x 2 is internal to a block whose output has no location, and its residual branch may get no
    gradient at all (timm zero-initialises the last BatchNorm of each block)."""
    names = {id(m): name for name, m in net.named_modules()}
    pooled = {
        names[id(m)]
        for m, out in maps
        if min(out.shape[-2:]) < 2 and not isinstance(m, nn.Sequential | nn.ModuleList) and id(m) in names
    }
    return {id(m) for m, _ in maps if any(names.get(id(m), "").startswith(p + ".") for p in pooled)}


def _pick(net: nn.Module, maps: list[tuple[nn.Module, torch.Tensor]], features: torch.Tensor | None) -> nn.Module:
    """The block whose output is the features map (the outermost one: it finishes last), else the last map.

    Maps of 1 x 1 are passed over while a larger one exists: a 1 x 1 map (a deep trunk at a small input size, a
    pooling layer) has no location, so its CAM would be uniform; the last stage with a larger map is used instead.
    """
    spatial = [(m, out) for m, out in maps if min(out.shape[-2:]) >= 2]
    if len(spatial) < len(maps):
        internal = _inside_a_pooled_block(net, maps)
        spatial = [(m, out) for m, out in spatial if id(m) not in internal]
    spatial = spatial or maps
    if features is not None:
        same = [m for m, out in spatial if out is features]
        if same:
            return same[-1]
    return spatial[-1][0]


def cam_target_layers(net: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers whose activations Grad-CAM weighs: the last convolutional block before global pooling, found by
    running ``net.forward_features`` on ``example`` (a normalised (B, 3, H, W) batch at the run's size).

    A network made of several trunks that each have ``forward_features`` (the hybrid Inception + Xception) gets
    one layer per trunk; pytorch-grad-cam averages their maps. A network without a convolutional map before its
    head (RNN, DBN) raises ``UserInputError``.
    """
    name = type(net).__name__
    if not _has_conv(net) or not hasattr(net, "forward_features"):
        raise UserInputError(f"{name} has no convolutional layer: class activation maps need a convolutional trunk")
    was_training = net.training
    net.eval()
    try:
        maps, features = _trace_maps(net, example)
    finally:
        net.train(was_training)
    if not maps:
        raise UserInputError(
            f"{name} computes no spatial feature map: class activation maps need a convolutional trunk"
        )
    feature_map = features if features.dim() == 4 else None
    trunks = [c for c in net.children() if hasattr(c, "forward_features") and _has_conv(c)]
    if feature_map is None and len(trunks) > 1:
        layers = []
        for trunk in trunks:
            inside = {id(m) for m in trunk.modules()}
            layers.append(_pick(trunk, [(m, out) for m, out in maps if id(m) in inside], None))
        return layers
    return [_pick(net, maps, feature_map)]


def cam_target_layer(net: nn.Module, example: torch.Tensor) -> nn.Module:
    """The single target layer of a one-trunk network (the last of ``cam_target_layers`` otherwise)."""
    return cam_target_layers(net, example)[-1]


def evaluated_network(model: nn.Module, image_size: int) -> nn.Module:
    """The backbone a strategy's ``forward`` runs in eval mode (the student, or Mean Teacher's teacher): the
    outermost submodule with ``forward_features`` that fires during ``model(images)``."""
    candidates = [m for m in model.modules() if hasattr(m, "forward_features")]
    fired: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, _i, _o: fired.append(m)) for m in candidates]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8))
    finally:
        for handle in handles:
            handle.remove()
    ids = {id(m) for m in fired}
    for module in candidates:  # modules() lists parents before children
        if id(module) in ids:
            return module
    raise UserInputError(f"{type(model).__name__} runs no backbone with forward_features")


def find_target_layers(model: nn.Module, image_size: int) -> list[nn.Module]:
    """``cam_target_layers`` of the backbone a strategy evaluates with, traced at ``image_size``."""
    net = evaluated_network(model, image_size)
    example = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)
    preprocess = getattr(model, "preprocess", None)
    return cam_target_layers(net, preprocess(example) if callable(preprocess) else example.float())


class ProbabilityInput(nn.Module):
    """A classifier fed float images in [0, 1] (its ``preprocess`` accepts them): Score-CAM masks the input, which
    a uint8 tensor cannot carry."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).float()  # (B, K) logits


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    method: str = "gradcam",
    target_layers: list[nn.Module] | None = None,
) -> np.ndarray:
    """CAMs (B, H, W) in [0, 1] for uint8 images (B, 3, H, W) and one target class per image, through
    ``model`` (a strategy: ``model(uint8 images) -> logits``; its ``preprocess`` normalises)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = _cam_class(method)
    model.eval()
    if target_layers is None:
        target_layers = find_target_layers(model, images.shape[-1])
    wrapper = ProbabilityInput(model).eval()
    inputs = images.float() / 255.0  # (B, 3, H, W) in [0, 1]
    # Score-CAM draws a tqdm bar per batch on stderr; nothing a user of bloodcls can act on.
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    # Frozen networks (Mean Teacher's EMA teacher, a frozen backbone) have no parameter that asks for gradients, so
    # nothing would flow back to the target layer: they ask for the CAM's duration, and keep no gradient after it.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for param in frozen:
        param.requires_grad_(True)
    try:
        with torch.enable_grad(), quiet, cam_class(model=wrapper, target_layers=target_layers) as cam:
            if method == "scorecam":
                cam.batch_size = 64  # masked copies per forward pass
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        for param in frozen:
            param.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))  # (B, H, W)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """uint8 RGB (H, W, 3) image with the CAM (H, W, values in [0, 1]) as a jet heat map on top, uint8 (H, W, 3)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and CAM {cam.shape} differ in size")
    rgb = image.astype(np.float32) / 255.0
    return show_cam_on_image(rgb, np.clip(cam, 0.0, 1.0), use_rgb=True, image_weight=image_weight)  # type: ignore[no-any-return]


def side_by_side(image: np.ndarray, cam: np.ndarray, min_size: int = 224) -> np.ndarray:
    """The image and its overlay next to each other, enlarged (nearest) to at least ``min_size`` pixels high so a
    64 px cell is visible; uint8 (H', 2 W', 3)."""
    pair = np.concatenate([image, overlay(image, cam)], axis=1)  # (H, 2W, 3)
    scale = max(1, -(-min_size // image.shape[0]))
    return np.repeat(np.repeat(pair, scale, axis=0), scale, axis=1)
