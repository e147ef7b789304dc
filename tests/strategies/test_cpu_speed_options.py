"""CPU speed options of ``Classifier``: ``compile`` (in place, when a trainer starts) and ``tiny_map_matmul``
(convolutions over 2 x 2 maps as im2col + GEMM); both keep checkpoints and results unchanged."""

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
        (2, {"kernel_size": 3, "padding": 1}),  # ResNet's last stage at 64 px
        (2, {"kernel_size": 3, "padding": 1, "stride": 2, "bias": True}),
        (1, {"kernel_size": 1}),
        (2, {"kernel_size": 1, "stride": 2}),  # a downsampling shortcut
        (4, {"kernel_size": 3, "padding": 1}),  # too large: oneDNN's convolution path
        (2, {"kernel_size": 3, "padding": 1, "groups": 2}),  # grouped: convolution path
    ],
)
def test_tiny_map_conv_equals_conv2d_forward_and_backward(size: int, kwargs: dict[str, object]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, **kwargs)  # type: ignore[arg-type]
    tiny = nn.Conv2d(8, 6, **kwargs)  # type: ignore[arg-type]
    tiny.load_state_dict(conv.state_dict())
    assert use_matmul_for_tiny_maps(tiny) == 1 and isinstance(tiny, TinyMapConv2d)
    x = torch.randn(5, 8, size, size)
    for layout in (torch.contiguous_format, torch.channels_last):
        xa = x.contiguous(memory_format=layout).requires_grad_()
        xb = x.contiguous(memory_format=layout).requires_grad_()
        ya, yb = conv(xa), tiny(xb)
        torch.testing.assert_close(yb, ya, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(ya)
        ya.backward(grad)
        yb.backward(grad)
        torch.testing.assert_close(xb.grad, xa.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiny.weight.grad, conv.weight.grad, atol=1e-4, rtol=1e-5)
        conv.zero_grad()
        tiny.zero_grad()


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
