"""Local foundation weights: a DINOv2-family ViT saved in the original DINOv2 key layout loads through timm's
checkpoint filter with identical outputs; weights that do not fit are a one-line error naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from bloodcls.errors import UserInputError
from bloodcls.models import create_backbone

VIT_ARGS = {"img_size": 28, "depth": 2}  # patch 14: a 2 x 2 grid, two blocks -- a tiny but real DINOv2 ViT


def _dinov2_layout(state: dict[str, torch.Tensor], registers: bool) -> dict[str, torch.Tensor]:
    """timm's ViT state dict as facebookresearch/dinov2 saves it: no head, a mask_token, and for register models
    ``register_tokens`` with the class token's position embedding inside ``pos_embed``."""
    out = {k: v.clone() for k, v in state.items() if not k.startswith("head.")}
    out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1])
    if registers:
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([torch.zeros_like(out["pos_embed"][:, :1]), out["pos_embed"]], dim=1)
    return out


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_dinov2_layout_weights_load_with_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model(name, num_classes=0, **VIT_ARGS).eval()
    saved = _dinov2_layout(source.state_dict(), registers="reg" in name)
    assert {"blocks.0.attn.qkv.weight", "pos_embed", "mask_token", "cls_token"} <= set(saved)
    torch.save(saved, tmp_path / "dinov2.pth")
    model = create_backbone(name, 5, pretrained_weights=str(tmp_path / "dinov2.pth"), **VIT_ARGS).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), source(x))
    assert model.get_classifier().out_features == 5
    cfg = model.pretrained_cfg  # normalisation and input size come from the architecture's pretrained config
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406) and model.patch_embed.patch_size == (14, 14)


def test_dinov2_weights_at_another_input_size_are_resampled(tmp_path: Path) -> None:
    source = timm.create_model("vit_small_patch14_dinov2", num_classes=0, img_size=42, depth=2)
    torch.save(_dinov2_layout(source.state_dict(), registers=False), tmp_path / "w.pth")
    model = create_backbone("vit_small_patch14_dinov2", 3, pretrained_weights=str(tmp_path / "w.pth"), **VIT_ARGS)
    assert model.pos_embed.shape[1] == 1 + 4 and model(torch.randn(1, 3, 28, 28)).shape == (1, 3)


def test_weights_that_do_not_fit_name_the_first_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = timm.create_model("vit_small_patch14_dinov2", num_classes=0, **VIT_ARGS).state_dict()
    state.pop("blocks.1.norm1.weight")
    state["decoder.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(UserInputError) as err:
        create_backbone("vit_small_patch14_dinov2", 5, pretrained_weights=str(tmp_path / "w.pth"), **VIT_ARGS)
    message = str(err.value)
    assert "\n" not in message and "missing blocks.1.norm1.weight" in message and "unexpected decoder.weight" in message
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(UserInputError, match=r"does not fit VisionTransformer: missing .*unexpected"):
        create_backbone("vit_small_patch14_dinov2", 5, pretrained_weights=str(tmp_path / "resnet.pth"), **VIT_ARGS)
