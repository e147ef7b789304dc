"""Label propagation over a k-NN graph of embeddings (Iscen et al., CVPR 2019), as a pure function.

Labeled nodes are clamped; unlabeled nodes get class scores by diffusion, and a certainty weight
1 - H(z)/log K that self-training can use to filter or weight pseudo-labels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import cg

from bloodcls.strategies.ssl_losses import normalized_entropy


def knn_affinity(features: np.ndarray, k: int = 10, gamma: float = 3.0, chunk: int = 2048) -> sp.csr_matrix:
    """Symmetric sparse affinity W = A + A^T with A_ij = max(cos(f_i, f_j), 0)^gamma for the k nearest j != i."""
    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    k = int(min(k, n - 1))
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):  # chunks keep memory O(chunk * n) instead of O(n^2)
        sim = x[start : start + chunk] @ x.T  # (c, N)
        for i in range(sim.shape[0]):
            sim[i, start + i] = -np.inf  # no self loops
        idx = np.argpartition(-sim, kth=k - 1, axis=1)[:, :k]  # (c, k)
        s = np.take_along_axis(sim, idx, axis=1)
        rows.append(np.repeat(np.arange(start, start + sim.shape[0]), k))
        cols.append(idx.ravel())
        vals.append(np.power(np.clip(s.ravel(), 0.0, None), gamma))
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return (a + a.T).tocsr()


def label_propagation(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    k: int = 10,
    alpha: float = 0.99,
    gamma: float = 3.0,
    max_iter: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse the labels (``-1`` = unlabeled) over the graph; return class probabilities (N, K) and per-node
    certainty weights (N,). Solves (I - alpha S) Z = Y with conjugate gradient, S = D^-1/2 W D^-1/2, with Y
    one-hot for labeled nodes normalised by class size (so big classes do not dominate)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    w = knn_affinity(features, k=k, gamma=gamma)
    degree = np.asarray(w.sum(axis=1)).ravel()
    d_inv_sqrt = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    s = d_inv_sqrt @ w @ d_inv_sqrt
    system = sp.eye(n) - alpha * s
    z = np.zeros((n, num_classes), dtype=np.float64)
    for c in range(num_classes):
        members = labels == c
        if not members.any():
            continue
        y = members.astype(np.float64) / members.sum()
        z[:, c], _ = cg(system, y, maxiter=max_iter)
    z = np.clip(z, 0.0, None)
    totals = z.sum(axis=1, keepdims=True)
    probs = np.where(totals > 0, z / np.maximum(totals, 1e-12), 1.0 / num_classes)
    labeled = labels >= 0
    probs[labeled] = np.eye(num_classes)[labels[labeled]]  # clamp the known labels
    weights = 1.0 - normalized_entropy(torch.from_numpy(probs)).numpy()  # (N,) float64
    return probs, weights
