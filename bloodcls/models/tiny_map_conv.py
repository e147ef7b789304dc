"""Convolutions over small feature maps as matrix multiplies, for CPU training at low resolution.

At 64 px a ResNet's later stages see 8 x 8, 4 x 4 and 2 x 2 maps, where oneDNN's kernels are far from the CPU's
matmul rate. Measured on the 2-core Intel AMX machine, bf16, channels_last, batch 64 (``bench/throughput.py``):

- weight gradients: 512 -> 512 on 2 x 2 maps 24-32 ms in oneDNN, 2.2 ms as one GEMM over NHWC im2col rows;
  256 -> 256 on 4 x 4 12 vs 2.4 ms; 128 -> 128 on 8 x 8 5.8 vs 3.4 ms; 64 -> 64 on 16 x 16 3.3 vs 4.4 ms
  (oneDNN wins there, hence ``WGRAD_MAX_OUT_PIXELS``);
- forward and input gradient: oneDNN is fast down to 4 x 4 outputs, slow on 2 x 2 (512 -> 512: 5.6 / 7 ms vs
  1.1 / 1.5 ms as GEMMs), hence ``GEMM_MAX_OUT_PIXELS``.

The rows are built in channels-last order (kernel row, kernel column, channel), which is the memory order of a
channels_last weight, so the weight matrix is a view and its gradient lands in the parameter's own layout (no
copies either way). The result is the same convolution (same parameters, same state-dict keys); only the order of
the floating-point sums differs. Grouped, dilated or non-zero-padded convolutions, any on a GPU, and any inside
``torch.compile`` (inductor has its own convolution lowering) keep ``nn.Conv2d``'s path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Largest output H * W whose forward and input gradient run as GEMMs (2 x 2 maps; 4 x 4 is oneDNN's again).
GEMM_MAX_OUT_PIXELS = 4
# Largest output H * W whose weight gradient runs as one GEMM (8 x 8 maps; 16 x 16 is oneDNN's again).
WGRAD_MAX_OUT_PIXELS = 64


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def im2col_rows(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> torch.Tensor:
    """(N, C, H, W) -> (N * H' * W', kh * kw * C): one row per output pixel, columns in (kh, kw, C) order.
    One copy, contiguous along the channels for a channels_last ``x`` (a view of it otherwise costs a transpose)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    nhwc = x.permute(0, 2, 3, 1)
    if ph or pw:
        nhwc = F.pad(nhwc, (0, 0, pw, pw, ph, ph))
    windows = nhwc.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, H', W', C, kh, kw): a view
    n, h_out, w_out = windows.shape[:3]
    return windows.permute(0, 1, 2, 4, 5, 3).reshape(n * h_out * w_out, -1)


def col2im_rows(
    rows: torch.Tensor,
    shape: torch.Size,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The adjoint of ``im2col_rows``: sums each row's (kh, kw, C) columns back onto the input pixels they came from;
    returns an (N, C, H, W) tensor in channels_last layout."""
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h_out, w_out = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
    cols = rows.view(n, h_out, w_out, kh, kw, c)
    padded = rows.new_zeros(n, h + 2 * ph, w + 2 * pw, c)
    for i in range(kh):  # one strided add per kernel tap: kh * kw passes over the output-sized gradient
        for j in range(kw):
            padded[:, i : i + sh * (h_out - 1) + 1 : sh, j : j + sw * (w_out - 1) + 1 : sw] += cols[:, :, :, i, j]
    return padded[:, ph : ph + h, pw : pw + w].permute(0, 3, 1, 2)


def _weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, kh, kw) -> (O, kh * kw * C), the column order of ``im2col_rows`` (a view of a channels_last weight)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _nhwc_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, O, H, W) -> (N * H * W, O) (a view of a channels_last tensor)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class _SmallMapConv(torch.autograd.Function):
    """A stride / padding convolution (no bias, groups 1, dilation 1) whose weight gradient is one GEMM, and whose
    forward and input gradient are GEMMs too when ``gemm_forward`` (oneDNN's kernels otherwise)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        gemm_forward: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.gemm_forward = stride, padding, gemm_forward
        if not gemm_forward:
            return F.conv2d(x, weight, None, stride, padding)
        n, _, h, w = x.shape
        kh, kw = weight.shape[2:]
        h_out, w_out = _out_size(h, kh, stride[0], padding[0]), _out_size(w, kw, stride[1], padding[1])
        out = im2col_rows(x, (kh, kw), stride, padding) @ _weight_matrix(weight).t()  # (N * H' * W', O)
        # (N, H', W', O) viewed as (N, O, H', W') is exactly the channels_last layout: no copy.
        return out.view(n, h_out, w_out, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        kernel = (weight.shape[2], weight.shape[3])
        grad_rows = _nhwc_rows(grad_out)  # (N * H' * W', O)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            if ctx.gemm_forward:
                grad_x = col2im_rows(grad_rows @ _weight_matrix(weight), x.shape, kernel, ctx.stride, ctx.padding)
            else:
                grad_x = torch.ops.aten.convolution_backward(
                    grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
                    [True, False, False],
                )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            rows = im2col_rows(x, kernel, ctx.stride, ctx.padding)
            o, c = weight.shape[:2]
            # (O, kh * kw * C) viewed as (O, C, kh, kw): the channels_last layout of the parameter itself.
            grad_w = (grad_rows.t() @ rows).view(o, kernel[0], kernel[1], c).permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None, None


class TinyMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose small-map cases run as GEMMs on the CPU (see the module docstring); same parameters."""

    def _small_map_pixels(self, x: torch.Tensor) -> int | None:
        """The output's H' * W' when this call takes the GEMM path, else None."""
        if (
            torch.compiler.is_compiling()  # inductor lowers convolutions its own way (and would inline these loops)
            or x.device.type != "cpu"
            or x.dim() != 4
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            return None
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        pixels = _out_size(x.shape[2], kh, sh, ph) * _out_size(x.shape[3], kw, sw, pw)
        return pixels if 0 < pixels <= WGRAD_MAX_OUT_PIXELS else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self._small_map_pixels(x)
        if pixels is None:
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled("cpu"):  # the cast autocast would make inside F.conv2d, made here
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
        elif x.dtype != weight.dtype:
            return super().forward(x)  # let F.conv2d raise its usual error
        stride, padding = (self.stride[0], self.stride[1]), (int(self.padding[0]), int(self.padding[1]))
        out = _SmallMapConv.apply(x, weight, stride, padding, pixels <= GEMM_MAX_OUT_PIXELS)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).view(1, -1, 1, 1)
        return out


def use_matmul_for_tiny_maps(net: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of ``net`` a ``TinyMapConv2d`` in place (parameters and keys unchanged);
    returns how many were converted. Subclasses (e.g. timm's padding-same convolutions) are left alone."""
    converted = 0
    for module in net.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = TinyMapConv2d
            converted += 1
    return converted
