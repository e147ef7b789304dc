"""Deep belief network: greedily pretrained stacked RBMs, fine-tuned as a sigmoid feed-forward classifier.

Hinton, Osindero & Teh, "A Fast Learning Algorithm for Deep Belief Nets" (Neural Computation 2006) and
Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks" (Science 2006); training
details after Hinton, "A Practical Guide to Training Restricted Boltzmann Machines" (2010).

Each hidden layer is a Bernoulli-Bernoulli RBM trained with contrastive divergence (``cd_step``) on the layer
below's activation probabilities, using unlabeled images only (``DBN.pretrain_greedy``). The same weights are
then the sigmoid layers of the feed-forward classifier (``nn.Linear`` weight = RBM weight, bias = hidden bias;
the visible biases are buffers used only by pretraining), so fine-tuning starts from the pretrained stack.

Visible units are pixel intensities in [0, 1] of a downscaled image (default 28x28 RGB = 2352 units). Inputs
arrive normalised (``(x - mean) / std`` with the strategy's statistics) or as uint8; ``to_visible`` resizes
them and maps each image's channels to [0, 1] by per-image, per-channel min-max. Min-max was chosen over a
sigmoid because it is invariant to any per-channel affine normalisation: pretraining on raw uint8 images and
fine-tuning on normalised floats give identical visible vectors, whatever normalisation the strategy uses,
and intensities spread over the whole [0, 1] range that Bernoulli units model (a sigmoid of normalised values
squeezes most pixels into its middle). It does stretch each image's contrast (absolute brightness is lost).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from bloodcls.models.common import TimmHeadMixin, linear_or_identity, zoo_cfg

# An image tensor (N, C, H, W), or batches of images: tensors or dataloader dicts with an "image" key.
ImageSource = torch.Tensor | Iterable[torch.Tensor | dict[str, torch.Tensor]]


@dataclass
class CDStep:
    """CD-k estimates of the log-likelihood gradient (ascent direction) and the batch's reconstruction error."""

    grad_weight: torch.Tensor  # (H, V)
    grad_h_bias: torch.Tensor  # (H,)
    grad_v_bias: torch.Tensor  # (V,)
    recon_error: float  # mean squared error between v0 and its one-step mean-field reconstruction


def cd_step(
    v0: torch.Tensor,
    weight: torch.Tensor,
    h_bias: torch.Tensor,
    v_bias: torch.Tensor,
    k: int = 1,
    generator: torch.Generator | None = None,
) -> CDStep:
    """One CD-k estimate for a Bernoulli RBM with ``p(h|v) = sigmoid(v W^T + c)``, ``p(v|h) = sigmoid(h W + b)``.

    ``v0`` (B, V) holds probabilities in [0, 1]. Following Hinton's practical guide: hidden states are sampled
    while running the Gibbs chain, visible reconstructions are probabilities, and the statistics use hidden
    probabilities. Pure: returns the update directions, the caller applies the learning rate.
    """
    ph0 = torch.sigmoid(v0 @ weight.T + h_bias)  # (B, H)
    ph, pv = ph0, v0
    for _ in range(k):
        h = torch.bernoulli(ph, generator=generator)  # (B, H) sampled states
        pv = torch.sigmoid(h @ weight + v_bias)  # (B, V) reconstruction probabilities
        ph = torch.sigmoid(pv @ weight.T + h_bias)  # (B, H)
    n = v0.shape[0]
    return CDStep(
        grad_weight=(ph0.T @ v0 - ph.T @ pv) / n,
        grad_h_bias=(ph0 - ph).mean(dim=0),
        grad_v_bias=(v0 - pv).mean(dim=0),
        recon_error=float(((v0 - torch.sigmoid(ph0 @ weight + v_bias)) ** 2).mean()),
    )


class DBN(TimmHeadMixin, nn.Module):
    """Stacked RBMs of sizes ``hidden`` on a ``img_size`` x ``img_size`` image, used as a sigmoid MLP + linear head.

    ``forward_features`` returns the top layer's activation probabilities (B, hidden[-1]) = ``num_features``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 28,
        grayscale: bool = False,
        hidden: tuple[int, ...] = (500, 500),
        drop_rate: float = 0.0,
        **_: object,  # timm passes pretrained_cfg etc.; they do not apply here
    ) -> None:
        super().__init__()
        self.img_size, self.grayscale = img_size, grayscale
        sizes = ((1 if grayscale else in_chans) * img_size * img_size, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        for i, layer in enumerate(self.rbms()):
            nn.init.normal_(layer.weight, std=0.01)  # Hinton's guide: small random weights, zero biases
            nn.init.zeros_(layer.bias)
            self.register_buffer(f"v_bias_{i}", torch.zeros(sizes[i]))
        self.drop = nn.Dropout(drop_rate)
        self.num_features = self.head_hidden_size = hidden[-1]
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)

    def rbms(self) -> list[nn.Linear]:
        """The RBMs' weights and hidden biases, which are also the classifier's sigmoid layers."""
        return [cast(nn.Linear, layer) for layer in self.layers]

    def v_bias(self, i: int) -> torch.Tensor:
        """Visible biases of RBM ``i`` (a buffer: only pretraining uses them)."""
        return cast(torch.Tensor, getattr(self, f"v_bias_{i}"))

    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised floats or uint8 -> visible probabilities (B, V) in [0, 1]."""
        x = x.float()
        s = self.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)  # (B, C, S, S)
        lo = x.amin(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        hi = x.amax(dim=(2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-6)  # per-image, per-channel min-max -> [0, 1]
        if self.grayscale:
            x = x.mean(dim=1, keepdim=True)  # (B, 1, S, S)
        return x.flatten(1)  # (B, V)

    def propagate(self, v: torch.Tensor, depth: int) -> torch.Tensor:
        """Mean-field activations of the first ``depth`` layers: the data the RBM at ``depth`` is trained on."""
        for layer in self.layers[:depth]:
            v = torch.sigmoid(layer(v))
        return v

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.propagate(self.to_visible(x), len(self.layers))  # (B, hidden[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x)
        return x if pre_logits else self.fc(x)  # (B, K)

    # ------------------------------------------------------------------ unsupervised pretraining
    def _visible_batches(self, images: ImageSource, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        device = self.rbms()[0].weight.device
        if isinstance(images, torch.Tensor):
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(images), batch_size):
                yield self.to_visible(images[order[start : start + batch_size]].to(device))
            return
        empty = True
        for batch in images:
            x = batch["image"] if isinstance(batch, dict) else batch
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                raise ValueError("DBN: expected image batches (B, C, H, W) or dicts with an 'image' key")
            empty = False
            yield self.to_visible(x.to(device))
        if empty:
            raise ValueError("DBN: the image source yielded no batches")

    @torch.no_grad()
    def reconstruction_error(self, images: ImageSource, layer: int = 0) -> float:
        """Mean squared one-step mean-field reconstruction error of RBM ``layer`` on ``images``."""
        rbm = self.rbms()[layer]
        errors = []
        for v in self._visible_batches(images, 256, seed=0):
            v = self.propagate(v, layer)
            recon = torch.sigmoid(torch.sigmoid(rbm(v)) @ rbm.weight + self.v_bias(layer))
            errors.append(float(((v - recon) ** 2).mean()))
        return sum(errors) / len(errors)

    @torch.no_grad()
    def pretrain_greedy(
        self,
        images: ImageSource,
        epochs: int = 10,
        lr: float = 0.05,
        cd_k: int = 1,
        batch_size: int = 64,
        momentum: float = 0.5,
        weight_decay: float = 2e-4,
        seed: int = 0,
    ) -> list[list[float]]:
        """Greedy layer-wise CD-k on unlabeled ``images``; returns each layer's mean reconstruction error per epoch.

        ``images``: a tensor (N, C, H, W) (uint8 or float, any size) or an iterable of batches (tensors or
        dataloader dicts with an ``image`` key), e.g. the datamodule's unlabeled loader. Labels are never read.
        Layer ``i`` is trained for ``epochs`` epochs on the mean-field activations of layers ``< i``.
        """
        # Every layer re-reads the data every epoch: a one-shot iterator is kept in memory, a DataLoader is not.
        data = list(images) if isinstance(images, Iterator) else images
        generator = torch.Generator(device=self.rbms()[0].weight.device).manual_seed(seed)
        history: list[list[float]] = []
        for depth, rbm in enumerate(self.rbms()):
            v_bias = self.v_bias(depth)
            # Hinton's guide, section 8.1: start the visible biases at the data's log-odds, so CD spends its
            # updates on structure rather than on learning the mean image.
            total, count = torch.zeros_like(v_bias), 0
            for v in self._visible_batches(data, batch_size, seed=seed):
                total += self.propagate(v, depth).sum(dim=0)
                count += v.shape[0]
            v_bias.copy_(torch.logit((total / count).clamp(0.01, 0.99)))
            velocity = [torch.zeros_like(t) for t in (rbm.weight, rbm.bias, v_bias)]
            errors = []
            for epoch in range(epochs):
                batch_errors = []
                for v in self._visible_batches(data, batch_size, seed=seed + epoch):
                    step = cd_step(self.propagate(v, depth), rbm.weight, rbm.bias, v_bias, cd_k, generator)
                    grads = (step.grad_weight - weight_decay * rbm.weight, step.grad_h_bias, step.grad_v_bias)
                    for param, vel, grad in zip((rbm.weight, rbm.bias, v_bias), velocity, grads, strict=True):
                        vel.mul_(momentum).add_(grad, alpha=lr)
                        param.add_(vel)
                    batch_errors.append(step.recon_error)
                errors.append(sum(batch_errors) / len(batch_errors))
            history.append(errors)
        return history


default_cfgs = generate_default_cfgs(
    {"bloodcls_dbn.untrained": zoo_cfg(input_size=28, min_input_size=8, first_conv=None)}
)


@register_model
def bloodcls_dbn(pretrained: bool = False, **kwargs: Any) -> DBN:
    """~1.4 M parameters: RBMs 2352-500-500 on 28x28 RGB (min-max scaled to [0, 1]), linear classifier."""
    return build_model_with_cfg(DBN, "bloodcls_dbn", pretrained, **kwargs)
