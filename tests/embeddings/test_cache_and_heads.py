"""The embedding cache (reuse, rebuild for another backbone or a tampered identity), and the heads as torch modules
against their scikit-learn / reference counterparts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bloodcls.embeddings import heads as H
from bloodcls.embeddings.extract import embed_dataset, embedding_identity, network_fingerprint
from bloodcls.embeddings.store import EmbeddingStore
from bloodcls.strategies.base import Classifier


def _batches(images: torch.Tensor, labels: torch.Tensor, size: int = 4) -> list[dict[str, torch.Tensor]]:
    return [{"image": images[i : i + size], "label": labels[i : i + size]} for i in range(0, len(images), size)]


def _counting(model: Classifier) -> tuple[list[int], object]:
    calls: list[int] = []

    def embed(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return model.embed(x)

    return calls, embed


def test_cache_is_reused_and_another_backbone_never_sees_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(10) % 2
    a = Classifier(num_classes=2, backbone="bloodcls_cnn_tiny").eval()
    store = EmbeddingStore(tmp_path, embedding_identity(a.net, a.mean, a.std, "none"))
    calls, embed = _counting(a)
    first, hashes, got_labels = embed_dataset(embed, _batches(images, labels), store)  # type: ignore[arg-type]
    assert sum(calls) == 10 and np.array_equal(got_labels, labels.numpy()) and len(set(hashes)) == 10
    with torch.no_grad():
        np.testing.assert_allclose(first, a.embed(images).numpy(), atol=2e-3, rtol=2e-3)  # float16 storage
    # Same backbone, a fresh process's view of the folder, another order: nothing is recomputed.
    again = EmbeddingStore(tmp_path, embedding_identity(a.net, a.mean, a.std, "none"))
    calls, embed = _counting(a)
    second, _, _ = embed_dataset(embed, _batches(images.flip(0), labels.flip(0)), again)  # type: ignore[arg-type]
    assert calls == [] and np.array_equal(second, first[::-1])
    # Another backbone (other weights), other normalisation, or TTA: another key, everything recomputed.
    b = Classifier(num_classes=2, backbone="bloodcls_cnn_tiny").eval()
    assert network_fingerprint(b.net) != network_fingerprint(a.net)
    for identity in (
        embedding_identity(b.net, b.mean, b.std, "none"),
        embedding_identity(a.net, a.mean * 0.5, a.std, "none"),
        embedding_identity(a.net, a.mean, a.std, "d4"),
    ):
        other = EmbeddingStore(tmp_path, identity)
        assert other.key != store.key and other.missing(hashes) == list(range(10))
    # The classifier (never used by pre_logits features) is not part of the identity: a 5-class head, same key.
    c = Classifier(num_classes=5, backbone="bloodcls_cnn_tiny")
    c.net.load_state_dict({k: v for k, v in a.net.state_dict().items() if not k.startswith("fc")}, strict=False)
    assert network_fingerprint(c.net) == network_fingerprint(a.net)


def test_a_folder_built_for_another_identity_is_rebuilt_not_reused(tmp_path: Path) -> None:
    identity = {"weights": "abc", "mean": [0.5], "std": [0.5], "tta": "none"}
    store = EmbeddingStore(tmp_path, identity)
    store.add(["h1", "h2"], np.ones((2, 3), dtype=np.float32))
    assert EmbeddingStore(tmp_path, identity).missing(["h1", "h2"]) == []
    meta = store.directory / "identity.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "weights": "something else"}))
    rebuilt = EmbeddingStore(tmp_path, identity)
    assert rebuilt.rebuilt and rebuilt.missing(["h1", "h2"]) == [0, 1] and not list(rebuilt.directory.glob("shard-*"))


def test_linear_head_reproduces_logistic_regression() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1, 10, 0.1, 1, 3] + 2
    y = np.arange(60) % 3
    x[y == 1, 0] += 3
    head = H.fit_linear(x, y, 4, C=0.5, max_iter=2000)  # class 3 never labeled: never predicted
    mean, std = x.mean(0), x.std(0) + 1e-6
    ref = LogisticRegression(C=0.5, max_iter=2000).fit((x - mean) / std, y)
    logits = head(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(logits[:, :3], ref.decision_function((x - mean) / std), atol=1e-3)
    assert (logits.argmax(1) != 3).all()


def test_knn_head_votes_by_nearest_labeled_embeddings_and_reloads_its_buffers() -> None:
    nodes = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    head = H.fit_knn(nodes, np.array([0, 0, 1]), 2, k=1, gamma=1.0)
    pred = head(torch.tensor([[1.0, 0.05], [0.1, 1.0]])).argmax(1)
    assert pred.tolist() == [0, 1]
    fresh = H.GraphVoteHead(2, 2, k=1)
    fresh.load_state_dict(head.state_dict())  # a checkpoint's fitted nodes, whatever their count
    assert torch.equal(fresh.nodes, head.nodes) and fresh.nodes.shape == (3, 2)


def test_label_propagation_head_labels_the_unlabeled_cluster_by_its_bridge() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal([5, 0], 0.3, size=(30, 2))
    b = rng.normal([0, 5], 0.3, size=(30, 2))
    head = H.fit_label_propagation(a[:1], np.array([0]), np.concatenate([a[1:], b]), 2, k=5, alpha=0.99, gamma=3.0)
    # b has no label at all: its nodes keep a flat score; a's nodes carry class 0
    assert head.scores.shape == (60, 2) and (head.scores[:30, 0] > 0.99).all()


@pytest.mark.parametrize("hidden", [16])
def test_mlp_head_fits_separable_embeddings(hidden: int) -> None:
    torch.manual_seed(0)
    x = np.concatenate([np.random.default_rng(0).normal(m, 0.5, size=(20, 4)) for m in (0, 3)])
    y = np.repeat([0, 1], 20)
    head = H.fit_mlp(x, y, 2, hidden=hidden, epochs=50, lr=1e-2, weight_decay=0.0)
    assert (head(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy() == y).mean() > 0.95
