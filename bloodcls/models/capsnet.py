"""Capsule network with dynamic routing (Sabour, Frosst & Hinton, "Dynamic Routing Between Capsules", NIPS 2017).

conv 9x9 (256, ReLU) -> primary capsules (conv 9x9 stride 2, 32 types x 8-D, squashed) -> one 16-D class
capsule per class, computed by 3 iterations of routing-by-agreement. The length of a class capsule is the
probability that the class is present; Sabour et al. train it with ``margin_loss``.

Choices for this platform:

* Logits. Strategies train with cross-entropy on ``forward``'s output, and capsule lengths in [0, 1) make
  poor logits (softmax of values that differ by < 1 cannot become confident). Because squash gives
  ``length = |s|^2 / (1 + |s|^2)``, the log-odds of a length is exactly ``log |s|^2`` (``s``: the class
  capsule's routed input). ``forward`` returns these log-odds: unbounded, monotonic in the length (same
  argmax), and ``torch.sigmoid(logits)`` recovers the lengths for ``margin_loss``.
* Input size. Sabour's 28 px input gives a 6x6 grid of primary capsules (1152 capsules). Larger inputs are
  average-pooled to the same ``grid`` before routing, so the routing weights do not depend on the input size
  and routing stays cheap at 64 px. Runs from 17 px; 28 px reproduces the paper's layout exactly.
* The reconstruction decoder (a regulariser in the paper) is omitted: strategies own the losses.
* ``forward_features`` returns the class capsules' inputs ``s`` (B, K, D); ``forward_head(..., pre_logits=True)``
  returns the flattened class-capsule poses ``squash(s)`` (B, K*D), so ``num_features`` grows with the class
  count and ``reset_classifier`` (which rebuilds the class capsules) changes it. ``num_classes >= 1``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import zoo_cfg


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Sabour et al. eq. 1: keep the direction of ``s``, map its length to ``|s|^2 / (1 + |s|^2)``."""
    sq = (s * s).sum(dim=dim, keepdim=True)
    return s * (sq / (1.0 + sq) / torch.sqrt(sq + eps))


def margin_loss(
    lengths: torch.Tensor, target: torch.Tensor, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5
) -> torch.Tensor:
    """Sabour et al. eq. 4, summed over classes and averaged over the batch.

    ``L = sum_k T_k max(0, m+ - |v_k|)^2 + lam (1 - T_k) max(0, |v_k| - m-)^2`` with ``lengths`` (B, K) in
    [0, 1] and integer ``target`` (B,). From ``CapsNet`` logits: ``margin_loss(torch.sigmoid(logits), y)``.
    """
    t = F.one_hot(target, lengths.shape[1]).to(lengths.dtype)  # (B, K)
    present = t * F.relu(m_plus - lengths) ** 2
    absent = lam * (1.0 - t) * F.relu(lengths - m_minus) ** 2
    return (present + absent).sum(dim=1).mean()


class ClassCapsules(nn.Module):
    """Routing-by-agreement from ``in_caps`` capsules of ``in_dim`` to ``num_classes`` capsules of ``out_dim``."""

    def __init__(self, in_caps: int, in_dim: int, num_classes: int, out_dim: int, iterations: int = 3) -> None:
        super().__init__()
        self.iterations = iterations
        self.weight = nn.Parameter(0.01 * torch.randn(in_caps, num_classes, out_dim, in_dim))  # W_ij

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Primary poses ``u`` (B, N, in_dim) -> routed class-capsule inputs ``s`` (B, K, out_dim)."""
        u_hat = torch.einsum("nkoi,bni->bnko", self.weight, u)  # (B, N, K, D) predictions
        # As in most implementations, routing iterations before the last see no gradient (stable, cheaper).
        u_hat_const = u_hat.detach()
        logits_b = u_hat.new_zeros(u_hat.shape[:3])  # (B, N, K) routing logits
        for _ in range(self.iterations - 1):
            c = logits_b.softmax(dim=2)  # (B, N, K) coupling coefficients
            v = squash((c.unsqueeze(-1) * u_hat_const).sum(dim=1))  # (B, K, D)
            logits_b = logits_b + (u_hat_const * v.unsqueeze(1)).sum(dim=-1)  # agreement (B, N, K)
        c = logits_b.softmax(dim=2)
        return (c.unsqueeze(-1) * u_hat).sum(dim=1)  # (B, K, D)


class CapsNet(nn.Module):
    """Sabour et al.'s CapsNet without the reconstruction decoder; ``forward`` returns length log-odds."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        conv_channels: int = 256,
        primary_types: int = 32,
        primary_dim: int = 8,
        class_dim: int = 16,
        grid: int = 6,
        routing_iterations: int = 3,
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"CapsNet needs num_classes >= 1 (its class capsules are its features), got {num_classes}")
        self.conv1 = nn.Conv2d(in_chans, conv_channels, 9)
        self.primary = nn.Conv2d(conv_channels, primary_types * primary_dim, 9, stride=2)
        self.primary_types, self.primary_dim, self.class_dim, self.grid = primary_types, primary_dim, class_dim, grid
        self.routing_iterations = routing_iterations
        self.drop = nn.Dropout(drop_rate)  # on primary-capsule poses (the only dense-like input)
        self.num_classes = num_classes
        self.class_caps = ClassCapsules(
            primary_types * grid * grid, primary_dim, num_classes, class_dim, routing_iterations
        )
        self.num_features = self.head_hidden_size = num_classes * class_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, 256, H-8, W-8)
        x = self.primary(x)  # (B, T*P, h, w), h = (H-17)//2 + 1
        x = F.adaptive_avg_pool2d(x, self.grid)  # (B, T*P, G, G): the paper's 6x6 grid at any input size
        b = x.shape[0]
        u = x.reshape(b, self.primary_types, self.primary_dim, -1).permute(0, 1, 3, 2)  # (B, T, G*G, P)
        u = squash(self.drop(u.reshape(b, -1, self.primary_dim)))  # (B, N, P) primary capsules
        return self.class_caps(u)  # (B, K, D)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return squash(x).flatten(1)  # (B, K*D) class-capsule poses
        return torch.log((x * x).sum(dim=-1) + 1e-6)  # (B, K) log-odds of the capsule lengths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.class_caps

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"CapsNet needs num_classes >= 1 (its class capsules are its features), got {num_classes}")
        in_caps = self.primary_types * self.grid * self.grid
        device = self.class_caps.weight.device
        caps = ClassCapsules(in_caps, self.primary_dim, num_classes, self.class_dim, self.routing_iterations)
        self.class_caps = caps.to(device)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_classes * self.class_dim


default_cfgs = generate_default_cfgs(
    {
        "bloodcls_capsnet.untrained": zoo_cfg(
            input_size=28, min_input_size=17, first_conv="conv1", classifier="class_caps", num_classes=10
        )
    }
)


@register_model
def bloodcls_capsnet(pretrained: bool = False, **kwargs: Any) -> CapsNet:
    """~6.1 M parameters (5 classes): conv 256 -> 32x8-D primary capsules on a 6x6 grid -> 16-D class capsules."""
    return build_model_with_cfg(CapsNet, "bloodcls_capsnet", pretrained, **kwargs)
