"""bench/ceiling.py: the training FLOPs of an image against a hand count, ceilings and shares, and which dtype
bounds each throughput configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ceiling import ceiling, efficiency, matmul_gflops, training_flops_per_image  # noqa: E402
from bench.throughput import Phase, Window, phase_dtypes  # noqa: E402


def test_training_flops_of_a_linear_classifier_match_a_hand_count() -> None:
    side, classes = 4, 5
    features = 3 * side * side
    # A matrix product of F inputs to K outputs costs 2*F*K per image forward; backward it costs the same again
    # for dL/dW and again for dL/dx -- except in the first layer, whose input (the images) needs no gradient.
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(features, 7), nn.Linear(7, classes))  # noqa: E731
    forward = 2 * features * 7 + 2 * 7 * classes
    backward = 2 * features * 7 + 2 * (2 * 7 * classes)  # first layer: weight grad only; second: weight + input
    assert training_flops_per_image(make, side, batch=3) == pytest.approx(forward + backward)


def test_ceiling_and_share_per_dtype() -> None:
    bounds = ceiling(2e9, {"fp32": 200.0, "bf16": 400.0})  # GFLOP/s over 2 GFLOP per image
    assert bounds == {"fp32": 100.0, "bf16": 200.0}
    shares = efficiency({"a": 50.0, "c": 150.0, "x": None}, bounds, {"a": "fp32", "c": "bf16", "x": "bf16"})
    assert shares == {"a": 0.5, "c": 0.75, "x": None}  # c is judged against bf16's bound, not fp32's


def test_matmul_rate_is_positive_and_finite() -> None:
    rate = matmul_gflops(torch.float32, side=64, seconds=0.05)
    assert 0 < rate < 1e6


def test_each_configuration_is_bounded_by_its_own_precision() -> None:
    args = argparse.Namespace(
        precision="32-true",
        fast_precision="bf16-mixed",
        variant=["c_fp32=--model.init_args.channels_last true --trainer.precision 32-true", "b_w0=--data.x 0"],
    )
    phases = [Phase(n, n, lambda w, s: Window(0, 0, 0, 0, 0, 0)) for n in ("a", "b", "c", "c_fp32", "b_w0")]
    assert phase_dtypes(args, phases) == {"a": "fp32", "b": "fp32", "c": "bf16", "c_fp32": "fp32", "b_w0": "fp32"}
