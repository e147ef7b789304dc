"""Running a frozen backbone over a loader through the embedding cache: what identifies a backbone (its weights,
normalisation, TTA), and one pass that embeds only the images the cache lacks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcls.embeddings.store import EmbeddingStore, image_hashes
from bloodcls.inference import tta_views


def network_fingerprint(net: nn.Module) -> str:
    """SHA-256 over the network's parameters and buffers, without its classifier (which ``pre_logits`` features never
    use): the same weights give the same key whether they came from a checkpoint, a weights file or a seed."""
    get_classifier = getattr(net, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    skip = {t.data_ptr() for t in classifier.state_dict().values()} if isinstance(classifier, nn.Module) else set()
    digest = hashlib.sha256(type(net).__name__.encode())
    for name, tensor in sorted(net.state_dict().items()):
        if tensor.data_ptr() in skip and tensor.numel():
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def embedding_identity(net: nn.Module, mean: torch.Tensor, std: torch.Tensor, tta: str) -> dict[str, Any]:
    """What an embedding depends on besides the image: weights, input normalisation, test-time augmentation."""
    return {
        "weights": network_fingerprint(net),
        "mean": [round(float(v), 6) for v in mean.flatten()],
        "std": [round(float(v), 6) for v in std.flatten()],
        "tta": tta,
    }


def tta_features(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: str) -> torch.Tensor:
    """Features (B, D) averaged over the TTA views of ``images`` (``none``: one view)."""
    views = tta_views(images, tta)
    total = embed(views[0]).float()
    for view in views[1:]:
        total = total + embed(view).float()
    return total / len(views)


def embed_dataset(
    embed: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[dict[str, Any]],
    store: EmbeddingStore,
    tta: str = "none",
    device: torch.device | str = "cpu",
    label_key: str = "label",
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Embeddings (N, D) float32, image hashes and labels of every item of ``batches``; images the store already
    holds are not run through the network again."""
    all_hashes: list[str] = []
    labels: list[np.ndarray] = []
    for batch in batches:
        images = batch["image"]
        hashes = image_hashes(images.numpy())
        todo = store.missing(hashes)
        if todo:
            with torch.no_grad():
                feats = tta_features(embed, images[todo].to(device), tta).cpu().numpy()
            store.add([hashes[i] for i in todo], feats)
        all_hashes.extend(hashes)
        if label_key in batch:
            labels.append(batch[label_key].numpy())
    label_array = np.concatenate(labels).astype(np.int64) if labels else np.full(len(all_hashes), -1, dtype=np.int64)
    return store.get(all_hashes), all_hashes, label_array
