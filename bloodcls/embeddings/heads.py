"""Light heads over frozen embeddings, as torch modules so test, predict, export and reports run them like any
network: a linear probe (fitted by logistic regression), a small MLP, and a k-NN vote over stored nodes (kNN: the
labeled embeddings with one-hot labels; label propagation: the labeled + unlabeled embeddings with their
propagated class scores). Each returns log-probabilities or logits (B, K)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional as F

# Logit of a class the labeled set never showed: never predicted, still a finite number (exports, softmax).
ABSENT_CLASS_LOGIT = -1e4


class _Resizable(nn.Module):
    """Buffers whose size depends on the data a head was fitted on: loading a state dict takes the stored shapes."""

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in list(self._buffers):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor):
                self._buffers[name] = torch.empty_like(stored)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (std floored) of the training embeddings."""
    return features.mean(axis=0), features.std(axis=0) + 1e-6


class LinearHead(nn.Module):
    """Standardisation folded into one ``nn.Linear``: logits = W x + b."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.float())


def fit_linear(features: np.ndarray, labels: np.ndarray, num_classes: int, C: float, max_iter: int) -> LinearHead:
    """Multinomial logistic regression on standardised embeddings, copied into a ``LinearHead``."""
    mean, std = standardizer(features)
    probe = LogisticRegression(C=C, max_iter=max_iter)
    probe.fit((features - mean) / std, labels)
    coef, intercept = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # sklearn's binary form: one row for the second class
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = np.zeros((num_classes, features.shape[1]))
    bias = np.full(num_classes, ABSENT_CLASS_LOGIT)
    weight[probe.classes_] = coef / std
    bias[probe.classes_] = intercept - (coef / std) @ mean
    head = LinearHead(features.shape[1], num_classes)
    with torch.no_grad():
        head.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head


class MLPHead(nn.Module):
    """Standardise, then Linear -> ReLU -> dropout -> Linear."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, width: int, num_classes: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.layers = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers((features.float() - self.mean) / self.std)


def fit_mlp(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    hidden: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float = 0.0,
    batch_size: int = 256,
) -> MLPHead:
    """Train an ``MLPHead`` with AdamW on the (cached) embeddings; seconds for a few thousand rows."""
    head = MLPHead(features.shape[1], num_classes, hidden)
    mean, std = standardizer(features)
    head.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    head.std.copy_(torch.as_tensor(std, dtype=torch.float32))
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx], label_smoothing=label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


class GraphVoteHead(_Resizable):
    """Class scores of a query = sum over its ``k`` most cosine-similar stored nodes of max(cos, 0)^gamma times the
    node's scores, normalised; returns log-probabilities. Nodes are stored L2-normalised."""

    nodes: torch.Tensor
    scores: torch.Tensor

    def __init__(self, width: int, num_classes: int, k: int = 10, gamma: float = 1.0) -> None:
        super().__init__()
        self.k, self.gamma, self.num_classes = k, gamma, num_classes
        self.register_buffer("nodes", torch.zeros(0, width))
        self.register_buffer("scores", torch.zeros(0, num_classes))

    def set_nodes(self, features: np.ndarray, scores: np.ndarray) -> GraphVoteHead:
        self.nodes = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(features.float(), dim=1) @ self.nodes.T  # (B, N)
        top, idx = sim.topk(min(self.k, self.nodes.shape[0]), dim=1)  # (B, k)
        weight = top.clamp(min=0.0).pow(self.gamma) + 1e-6  # a query unlike every node still gets a (flat) vote
        votes = (weight.unsqueeze(-1) * self.scores[idx]).sum(dim=1)  # (B, K)
        return (votes / votes.sum(dim=1, keepdim=True) + 1e-8).log()


def fit_knn(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int, gamma: float) -> GraphVoteHead:
    """Weighted k-NN over the labeled embeddings."""
    head = GraphVoteHead(features.shape[1], num_classes, k, gamma)
    return head.set_nodes(features, np.eye(num_classes)[labels])


def fit_label_propagation(
    labeled: np.ndarray,
    labels: np.ndarray,
    unlabeled: np.ndarray,
    num_classes: int,
    k: int,
    alpha: float,
    gamma: float,
) -> GraphVoteHead:
    """Propagate the labels over the k-NN graph of labeled + unlabeled embeddings (the project's label propagation),
    then classify new images by a k-NN vote over the propagated scores of the graph's nodes."""
    # Imported here: bloodcls.strategies imports this module (FrozenHead), so a top-level import would be circular.
    from bloodcls.strategies.label_propagation import label_propagation

    features = np.concatenate([labeled, unlabeled])
    targets = np.concatenate([labels, np.full(len(unlabeled), -1, dtype=np.int64)])
    probs, _ = label_propagation(features, targets, num_classes, k=k, alpha=alpha, gamma=gamma)
    head = GraphVoteHead(features.shape[1], num_classes, k, gamma)
    return head.set_nodes(features, probs)
