"""CPU speed options of ``Classifier``: ``compile`` (in place, when a trainer starts) and ``tiny_map_matmul``
(convolutions over small maps as GEMMs); both keep checkpoints and results unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bloodcls.models.tiny_map_conv import TinyMapConv2d, use_matmul_for_tiny_maps
from bloodcls.strategies import Classifier, MeanTeacher


@pytest.mark.slow  # torch.compile
def test_compile_is_in_place_and_keeps_state_dict_keys() -> None:
    torch.manual_seed(0)
    eager = Classifier(num_classes=3, backbone="bloodcls_cnn_tiny").eval()
    compiled = Classifier(num_classes=3, backbone="bloodcls_cnn_tiny", compile=True).eval()
    assert compiled.net._compiled_call_impl is None  # compiled when a trainer starts (configure_model), not before
    compiled.configure_model()
    compiled.configure_model()  # idempotent: Lightning calls it once per trainer entry point
    assert compiled.net._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    compiled.load_state_dict(eager.state_dict())  # eager checkpoints load into compiled models and back
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), eager(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(compiled.embed(images), eager.embed(images))


def test_mean_teacher_copies_an_eager_backbone() -> None:
    model = MeanTeacher(num_classes=3, backbone="bloodcls_cnn_tiny", compile=True)
    model.configure_model()
    # A teacher deep-copied from a compiled module would still run the student's forward.
    assert model.net._compiled_call_impl is not None and model.teacher._compiled_call_impl is None


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (2, {"kernel_size": 3, "padding": 1}),  # ResNet's last stage at 64 px: GEMM forward, input and weight grad
        (2, {"kernel_size": 3, "padding": 1, "stride": 2, "bias": True}),
        (1, {"kernel_size": 1}),
        (4, {"kernel_size": 1, "stride": 2}),  # a downsampling shortcut onto 2 x 2
        (4, {"kernel_size": 3, "padding": 1, "stride": 2}),  # 4 x 4 -> 2 x 2: GEMM forward
        (4, {"kernel_size": 3, "padding": 1}),  # 4 x 4 out: oneDNN forward, GEMM weight gradient
        ((8, 6), {"kernel_size": (3, 5), "padding": (1, 2), "bias": True}),  # non-square: GEMM weight gradient
        (9, {"kernel_size": 5, "padding": 0, "stride": 2}),  # no padding, 3 x 3 out: oneDNN forward, GEMM weight grad
        (3, {"kernel_size": 3, "padding": 2, "stride": 3}),  # padding 2, stride 3: 2 x 2 out, GEMM forward
        (16, {"kernel_size": 3, "padding": 1}),  # 16 x 16 out: too large, nn.Conv2d's path
        (2, {"kernel_size": 3, "padding": 1, "groups": 2}),  # grouped: nn.Conv2d's path
        (4, {"kernel_size": 3, "padding": 2, "dilation": 2}),  # dilated: nn.Conv2d's path
    ],
)
def test_tiny_map_conv_equals_conv2d_forward_and_backward(
    size: int | tuple[int, int], kwargs: dict[str, object]
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, **kwargs)  # type: ignore[arg-type]
    tiny = nn.Conv2d(8, 6, **kwargs)  # type: ignore[arg-type]
    tiny.load_state_dict(conv.state_dict())
    assert use_matmul_for_tiny_maps(tiny) == 1 and isinstance(tiny, TinyMapConv2d)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(5, 8, h, w)
    for layout in (torch.contiguous_format, torch.channels_last):
        for module in (conv, tiny):
            module.to(memory_format=layout)
        xa = x.clone().contiguous(memory_format=layout).requires_grad_()  # leaves of their own: .grad is filled
        xb = x.clone().contiguous(memory_format=layout).requires_grad_()
        ya, yb = conv(xa), tiny(xb)
        torch.testing.assert_close(yb, ya, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(ya)
        ya.backward(grad)
        yb.backward(grad)
        assert xa.grad is not None and xb.grad is not None
        torch.testing.assert_close(xb.grad, xa.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiny.weight.grad, conv.weight.grad, atol=1e-4, rtol=1e-5)
        if conv.bias is not None:
            torch.testing.assert_close(tiny.bias.grad, conv.bias.grad, atol=1e-5, rtol=1e-5)
        conv.zero_grad()
        tiny.zero_grad()


@pytest.mark.parametrize("size", [2, 4, 8])
def test_tiny_map_conv_under_bf16_autocast_matches_conv2d(size: int) -> None:
    """The casts autocast makes inside F.conv2d are made by hand on the GEMM path: bf16 out, fp32 gradients."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1).to(memory_format=torch.channels_last)
    tiny = nn.Conv2d(16, 32, 3, padding=1).to(memory_format=torch.channels_last)
    tiny.load_state_dict(conv.state_dict())
    use_matmul_for_tiny_maps(tiny)
    x = torch.randn(4, 16, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = conv(x), tiny(x)
    assert yb.dtype == ya.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), ya.float(), atol=0.05, rtol=0.02)
    ya.float().square().sum().backward()
    yb.float().square().sum().backward()
    assert tiny.weight.grad is not None and tiny.weight.grad.dtype == torch.float32
    torch.testing.assert_close(tiny.weight.grad, conv.weight.grad, atol=0.5, rtol=0.03)


def test_tiny_map_conv_skips_gradients_nobody_needs() -> None:
    """A frozen layer (no weight gradient) and a first layer (no input gradient) train as nn.Conv2d does."""
    torch.manual_seed(0)
    tiny = nn.Conv2d(4, 4, 3, padding=1)
    use_matmul_for_tiny_maps(tiny)
    x = torch.randn(2, 4, 2, 2, requires_grad=True)
    tiny.weight.requires_grad_(False)
    tiny(x).sum().backward()
    assert x.grad is not None and tiny.weight.grad is None
    tiny.weight.requires_grad_(True)
    tiny(x.detach()).sum().backward()
    assert tiny.weight.grad is not None


def test_tiny_map_matmul_classifier_matches_plain_and_keeps_keys() -> None:
    torch.manual_seed(0)
    plain = Classifier(num_classes=3, backbone="bloodcls_cnn_tiny", channels_last=True).eval()
    fast = Classifier(num_classes=3, backbone="bloodcls_cnn_tiny", channels_last=True, tiny_map_matmul=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert sum(isinstance(m, TinyMapConv2d) for m in fast.modules()) == 6  # every conv of the 3 blocks
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)  # 8 px: the last block runs on 2 x 2 maps
    with torch.no_grad():
        torch.testing.assert_close(fast(images), plain(images), atol=1e-5, rtol=1e-4)
