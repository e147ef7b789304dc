"""Class activation maps: a target layer for every convolutional zoo network (and a one-line refusal for the others),
finite CAMs of the input's size from every method, CAMs that point at the evidence, overlays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import timm
import torch
import yaml
from conftest import REPO
from torch import nn

pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")

from bloodcls.errors import UserInputError  # noqa: E402
from bloodcls.evaluation.cam import (  # noqa: E402
    METHODS,
    cam_target_layer,
    cam_target_layers,
    compute_cams,
    find_target_layers,
    overlay,
    side_by_side,
)
from bloodcls.models.zoo import ZOO_MODELS  # noqa: E402
from bloodcls.strategies import Supervised  # noqa: E402

CONFIG_MODELS = sorted(
    {yaml.safe_load(p.read_text())["model"]["init_args"]["backbone"] for p in (REPO / "configs/models").glob("*.yaml")}
)
NO_CONV_TRUNK = frozenset({"bloodcls_rnn", "bloodcls_dbn"})
# Seconds each even at their smallest input (VGG's 4096-wide head, two ImageNet trunks, 100+ layer ResNets).
SLOW = frozenset({"bloodcls_hybrid_inception_xception", "vgg16", "vgg19", "resnet101", "resnet152"})
SIZE = {"inception_v3": 75}  # the others run from 32 px (or less)


def _networks(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _size(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name)
    smallest = cfg.min_input_size[-1] if cfg is not None and cfg.min_input_size else 0
    return max(32, smallest, SIZE.get(name, 0))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------- the whole zoo
@pytest.mark.parametrize("name", _networks(sorted(set(ZOO_MODELS) | set(CONFIG_MODELS))))
def test_every_convolutional_network_gets_a_finite_cam_of_the_input_size(name: str) -> None:
    torch.manual_seed(0)
    model = Supervised(backbone=name, num_classes=3)
    size = _size(name)
    if name in NO_CONV_TRUNK:
        with pytest.raises(UserInputError, match="has no convolutional layer"):
            find_target_layers(model, size)
        return
    layers = find_target_layers(model, size)
    inside = {id(m) for m in model.net.modules()}
    assert layers and all(id(layer) in inside and layer is not model.net for layer in layers)
    # Every image explained for every class: an untrained network's CAM of one class may be empty (all weights
    # negative), but not of every class on every image.
    images = _images(2, size).repeat(3, 1, 1, 1)
    cams = compute_cams(model, images, [0, 0, 1, 1, 2, 2], "gradcam", layers)
    assert cams.shape == (6, size, size)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    assert (cams.reshape(6, -1).max(axis=1) > 0).any()


def test_zoo_list_covers_the_configs_and_every_registered_network() -> None:
    assert set(ZOO_MODELS) <= set(CONFIG_MODELS) and len(CONFIG_MODELS) >= 20


# ---------------------------------------------------------------------------------------------- which layer
def test_resnet_target_is_the_last_stage_and_a_deeper_one_when_that_map_is_1x1() -> None:
    net = timm.create_model("resnet18", num_classes=3).eval()
    assert cam_target_layer(net, torch.zeros(1, 3, 64, 64)) is net.layer4  # 2 x 2 map at 64 px
    # At 32 px layer4's map is 1 x 1 (no location): the CAM comes from layer3, not from inside a layer4 block.
    assert cam_target_layer(net, torch.zeros(1, 3, 32, 32)) is net.layer3


def test_small_cnn_and_unet_targets() -> None:
    cnn = timm.create_model("bloodcls_cnn_tiny", num_classes=3).eval()
    assert cam_target_layer(cnn, torch.zeros(1, 3, 32, 32)) is cnn.features
    unet = timm.create_model("bloodcls_unet_cls", num_classes=3).eval()
    # Its features concatenate pooled decoder maps: the CAM reads the last (full-resolution) decoder block.
    assert cam_target_layer(unet, torch.zeros(1, 3, 32, 32)) is unet.get_submodule("up.0")


@pytest.mark.slow  # two ImageNet trunks
def test_hybrid_gets_one_layer_per_trunk() -> None:
    net = timm.create_model("bloodcls_hybrid_inception_xception", num_classes=3).eval()
    layers = cam_target_layers(net, torch.zeros(1, 3, 75, 75))
    assert len(layers) == 2
    assert any(layer in set(net.get_submodule("inception").modules()) for layer in layers)
    assert any(layer in set(net.get_submodule("xception").modules()) for layer in layers)


@pytest.mark.parametrize("name", ["bloodcls_rnn", "bloodcls_dbn"])
def test_networks_without_a_convolutional_trunk_are_refused_in_one_line(name: str) -> None:
    net = timm.create_model(name, num_classes=3).eval()
    with pytest.raises(UserInputError) as err:
        cam_target_layers(net, torch.zeros(1, 3, 32, 32))
    assert "\n" not in str(err.value) and "convolutional" in str(err.value)


# ---------------------------------------------------------------------------------------------- the maps
class _RedDetector(nn.Module):
    """Class 0 = how red the image is, class 1 = how blue: the evidence is where those pixels are."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]]).view(2, 3, 1, 1))
        self.act = nn.ReLU()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))  # (B, 2, H, W)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _RedDetector()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


@pytest.mark.parametrize("method", METHODS)
def test_cam_points_at_the_evidence_of_the_target_class(method: str) -> None:
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    images[0, 0, :8, :8] = 255  # a red square top left
    images[0, 2, 8:, 8:] = 255  # a blue square bottom right
    model = _Classifier()
    assert find_target_layers(model, 16) == [model.net.act]
    red, blue = compute_cams(model, images.repeat(2, 1, 1, 1), [0, 1], method)
    assert red.shape == (16, 16) and np.isfinite(red).all()
    if (
        method == "eigencam"
    ):  # class-agnostic (the activations' first principal component): the squares, not empty space
        background = (red[:8, 8:].mean() + red[8:, :8].mean()) / 2
        assert max(red[:8, :8].mean(), red[8:, 8:].mean()) > background + 0.3
        return
    # Score-CAM weighs channels by a softmax of masked-input scores: less contrast, same order.
    assert red[:8, :8].mean() > red[8:, 8:].mean() + 0.15, method
    assert blue[8:, 8:].mean() > blue[:8, :8].mean() + 0.15, method


def test_unknown_method_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="--method layercam"):
        compute_cams(_Classifier(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [0], "layercam")


def test_overlay_blends_a_heat_map_onto_the_image() -> None:
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[:4] = 1.0
    out = overlay(image, cam)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 2] and out[7, 7, 2] > out[7, 7, 0]  # hot (red) where the CAM is 1, cold (blue) at 0
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, cam[:4])
    pair = side_by_side(image, cam, min_size=32)
    assert pair.shape == (32, 64, 3) and (pair[:, :32] == 128).all()


def test_the_cam_reads_the_network_the_strategy_evaluates_with() -> None:
    from bloodcls.evaluation.cam import evaluated_network
    from bloodcls.strategies import MeanTeacher

    model = MeanTeacher(backbone="bloodcls_cnn_tiny", num_classes=3, eval_with_teacher=True)
    assert evaluated_network(model, 32) is model.teacher
    layers = find_target_layers(model, 32)
    assert layers == [model.teacher.get_submodule("features")]
    student = MeanTeacher(backbone="bloodcls_cnn_tiny", num_classes=3, eval_with_teacher=False)
    assert evaluated_network(student, 32) is student.net


def test_cams_of_a_frozen_evaluation_network_are_computed_and_leave_it_frozen() -> None:
    from bloodcls.strategies import MeanTeacher

    torch.manual_seed(0)
    model = MeanTeacher(backbone="bloodcls_cnn_tiny", num_classes=3, eval_with_teacher=True)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():  # as Lightning's test loop under DDP on gloo (no_grad, not inference mode)
        cams = compute_cams(model, images, [0, 1])
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all() and cams.max() > 0
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.grad is None for p in model.parameters())
