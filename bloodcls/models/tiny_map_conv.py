"""Convolutions over tiny feature maps as one matrix multiply (im2col + GEMM), for CPU training at low resolution.

At 64 px a ResNet's last stage sees 2 x 2 maps. oneDNN's convolution kernels are far from peak at that shape:
in a bf16 ResNet-18 step on an AMX CPU, the three 512-channel 3x3 convolutions on 2 x 2 maps took about a third of
the step, and computing them as unfold + matmul made the whole step ~25-30 % faster (``bench/throughput.py``).
The result is the same convolution (same parameters, same state-dict keys), so accuracy is unaffected; on 4 x 4
maps and larger oneDNN's kernels win, hence the threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Largest input H * W computed as a matmul: 2 x 2 maps (measured: 2.3x faster fwd + bwd; 4 x 4 maps are slower).
TINY_MAP_MAX_PIXELS = 4


class TinyMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes inputs of at most ``TINY_MAP_MAX_PIXELS`` pixels as im2col + one GEMM."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        padding = self.padding
        if h * w > TINY_MAP_MAX_PIXELS or self.groups != 1 or self.padding_mode != "zeros" or isinstance(padding, str):
            return super().forward(x)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, padding, self.dilation
        h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, padding, self.stride)  # (N, C_in*kh*kw, L)
        rows = cols.transpose(1, 2).reshape(n * h_out * w_out, -1)  # (N*L, C_in*kh*kw)
        out = rows @ self.weight.flatten(1).t()  # (N*L, C_out)
        if self.bias is not None:
            out = out + self.bias
        # (N, L, C_out) viewed as (N, C_out, H', W') is exactly the channels_last layout: no copy.
        return out.view(n, h_out * w_out, self.out_channels).transpose(1, 2).reshape(n, self.out_channels, h_out, w_out)


def use_matmul_for_tiny_maps(net: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of ``net`` a ``TinyMapConv2d`` in place (parameters and keys unchanged);
    returns how many were converted. Subclasses (e.g. timm's padding-same convolutions) are left alone."""
    converted = 0
    for module in net.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = TinyMapConv2d
            converted += 1
    return converted
