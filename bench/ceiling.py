"""What this machine could do at best: matrix-multiply throughput per dtype and the training FLOPs of one image,
hence an images/s ceiling per precision and how close each measured configuration comes to it.

Why it matters: the speed-up of the recommended settings over a plain fp32 loop (``c/a`` in
``bench/throughput.py``) is bounded by the CPU's bf16 / fp32 matmul ratio, which is a property of the silicon --
AMX tiles on Intel Sapphire Rapids and later, AVX512-BF16 dot products (twice the fp32 rate at most) on AMD Zen 4 --
so the ratio measured on one machine does not carry to another. ``python bench/throughput.py --ceiling`` prints
both ratios side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

MATMUL_SIDE = 2048  # large enough for the kernels' steady state, small enough for a few seconds on 2 cores
MATMUL_SECONDS = 2.0


def matmul_gflops(dtype: torch.dtype, side: int = MATMUL_SIDE, seconds: float = MATMUL_SECONDS) -> float:
    """GFLOP/s of ``side`` x ``side`` matrix products in ``dtype`` at the current torch thread count (best of
    repeated runs over about ``seconds``)."""
    a = torch.randn(side, side).to(dtype)
    b = torch.randn(side, side).to(dtype)
    torch.mm(a, b)  # warm-up: kernel selection and packing
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * side**3 / best / 1e9


def training_flops_per_image(make_model: Callable[[], nn.Module], image_size: int, batch: int = 2) -> float:
    """FLOPs of one training image: forward, loss and backward of ``make_model()`` on a ``batch`` of random
    images, counted by ``torch.utils.flop_counter`` (convolutions and matrix products), divided by ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model().train()
    images = torch.randn(batch, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        out = model(images)
        out.float().sum().backward()
    return counter.get_total_flops() / batch


def ceiling(flops_per_image: float, gflops: dict[str, float]) -> dict[str, float]:
    """Images/s each dtype's matmul rate would train at if every FLOP ran at it (an upper bound)."""
    return {name: rate * 1e9 / flops_per_image for name, rate in gflops.items()}


def efficiency(images_per_s: dict[str, float | None], bounds: dict[str, float], dtype_of: dict[str, str]) -> dict:
    """Measured images/s of each configuration as a fraction of its own dtype's ceiling (None: not measured)."""
    out: dict[str, float | None] = {}
    for config, rate in images_per_s.items():
        bound = bounds.get(dtype_of.get(config, ""))
        out[config] = None if rate is None or not bound else rate / bound
    return out


def ceiling_report(
    backbone_factory: Callable[[], nn.Module],
    image_size: int,
    images_per_s: dict[str, float | None],
    dtype_of: dict[str, str],
) -> dict[str, Any]:
    """Matmul rates (fp32, bf16), the model's training FLOPs per image, the ceilings and each configuration's
    share of its dtype's ceiling; ``bf16/fp32`` is the most a bf16 configuration can gain over an fp32 one."""
    gflops = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    flops = training_flops_per_image(backbone_factory, image_size)
    bounds = ceiling(flops, gflops)
    return {
        "matmul_gflops": {k: round(v, 1) for k, v in gflops.items()},
        "matmul_side": MATMUL_SIDE,
        "bf16_over_fp32": round(gflops["bf16"] / gflops["fp32"], 3),
        "training_gflop_per_image": round(flops / 1e9, 4),
        "ceiling_images_per_s": {k: round(v, 1) for k, v in bounds.items()},
        "share_of_ceiling": {
            k: (None if v is None else round(v, 3)) for k, v in efficiency(images_per_s, bounds, dtype_of).items()
        },
    }
