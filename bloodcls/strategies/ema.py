"""Exponential moving averages of a network (decay warm-up rule, update) and the DDP syncs of running statistics."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import Strategy


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay after ``step`` optimiser steps: min(decay, 1 - 1/(step + 1)) -- Mean Teacher's reference warm-up.

    A true average of the weights seen so far while ``step + 1 < 1 / (1 - decay)`` (0 at step 0: the copy starts as
    the network), ``decay`` after that; without it the average stays near the random initialisation for about
    1 / (1 - decay) steps.
    """
    return min(decay, 1.0 - 1.0 / (max(step, 0) + 1))


@torch.no_grad()
def ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float, buffers: bool = False) -> None:
    """average <- decay * average + (1 - decay) * model for parameters; with ``buffers`` also for float buffers
    (BatchNorm statistics) and a copy of the others (``num_batches_tracked``)."""
    for a, m in zip(average.parameters(), model.parameters(), strict=True):
        a.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
    if not buffers:
        return
    for buf, src in zip(average.buffers(), model.buffers(), strict=True):
        if buf.is_floating_point():
            buf.mul_(decay).add_(src.detach(), alpha=1.0 - decay)
        else:
            buf.copy_(src)


@torch.no_grad()
def average_float_buffers(module: torch.nn.Module, strategy: Strategy) -> None:
    """Replace every floating-point buffer (BN running mean / var) by its mean over the ranks: one all-reduce."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])  # (sum of buffer sizes,)
    flat = strategy.reduce(flat, reduce_op="mean")
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


def all_reduce_mean(tensor: torch.Tensor, trainer: Any) -> torch.Tensor:
    """Mean of ``tensor`` over the DDP ranks of ``trainer`` (itself without a trainer or on one process), so
    per-rank statistics (class distributions, confidences) agree on every rank instead of being overwritten."""
    if trainer is None or trainer.world_size <= 1:
        return tensor
    reduced: torch.Tensor = trainer.strategy.reduce(tensor.float(), reduce_op="mean")
    return reduced


def gather_rows(tensor: torch.Tensor, trainer: Any) -> torch.Tensor:
    """``tensor`` (B, ...) of every DDP rank concatenated (world * B, ...), itself on one process: per-sample
    statistics (FlexMatch's pool predictions) then update identically on every rank."""
    if trainer is None or trainer.world_size <= 1:
        return tensor
    gathered: torch.Tensor = trainer.strategy.all_gather(tensor)
    return gathered.reshape(-1, *tensor.shape[1:])
