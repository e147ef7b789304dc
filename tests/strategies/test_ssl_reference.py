"""FixMatch, pseudo-label and Mean Teacher steps against hand computations on a linear network (no BatchNorm, so
one concatenated forward equals separate ones): targets from the weak view, the batch-mean masked loss, masks
that respond to thresholds, distribution alignment that updates, EMA decay warm-up and the consistency ramp-up."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from strategy_fakes import SIZE, B, K, make_batch
from torch import nn

from bloodcls.strategies import FixMatch, MeanTeacher, PseudoLabel
from bloodcls.strategies.base import Classifier
from bloodcls.strategies.ema import ema_decay_at
from bloodcls.strategies.ssl_losses import normalized_entropy, softmax_mse

COMMON: dict[str, Any] = {"num_classes": K, "backbone": "bloodcls_cnn_tiny"}


def _linear(seed: int, scale: float = 30.0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, K))
    with torch.no_grad():
        net[1].weight.mul_(scale)  # spread confidences over (1/K, 1) so thresholds split the batch
    return net


def _probs(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    return model.net(model.preprocess(images)).float().softmax(dim=-1)


def _middle(values: torch.Tensor) -> float:
    """A threshold strictly between the sorted middle values: accepts about half the batch."""
    s = values.sort().values
    return float((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2)


def test_fixmatch_targets_come_from_the_weak_view_and_the_loss_is_a_batch_mean() -> None:
    model = FixMatch(**COMMON)
    model.net = _linear(0)
    unl = make_batch(model.loader_request())["unlabeled"]
    weak, strong = unl["image_weak"], unl["image_strong"]
    confidence, targets = _probs(model, weak).max(dim=-1)
    model.confidence_threshold = _middle(confidence)
    mask = confidence >= model.confidence_threshold
    assert 0 < int(mask.sum()) < B  # a partial mask: the mean over the batch and over accepted images differ
    strong_logits = model.net(model.preprocess(strong))
    expected = (F.cross_entropy(strong_logits, targets, reduction="none") * mask).sum() / B
    out = model.unlabeled_loss(unl, 0)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert float(out.stats["mask_ratio"]) == pytest.approx(float(mask.float().mean()))
    # The bugs this guards against give other values: strong-view targets training the weak view, and the mean
    # over accepted images only.
    conf_s, targets_s = _probs(model, strong).max(dim=-1)
    weak_logits = model.net(model.preprocess(weak))
    swapped = F.cross_entropy(weak_logits, targets_s, reduction="none") * (conf_s >= model.confidence_threshold)
    assert abs(swapped.mean().item() - expected.item()) > 1e-3
    assert abs(expected.item() * B / int(mask.sum()) - expected.item()) > 1e-3


def test_fixmatch_training_step_is_one_forward_with_the_same_terms() -> None:
    model = FixMatch(**COMMON)
    model.net = _linear(0)
    batch = make_batch(model.loader_request())
    calls: list[int] = []
    model.net.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    weak, strong = batch["unlabeled"]["image_weak"], batch["unlabeled"]["image_strong"]
    confidence, targets = _probs(model, weak).max(dim=-1)
    model.confidence_threshold = _middle(confidence)
    mask = confidence >= model.confidence_threshold
    expected = (F.cross_entropy(model.net(model.preprocess(strong)), targets, reduction="none") * mask).mean()
    calls.clear()
    logits, out = model.labeled_logits_and_unlabeled(batch["labeled"], batch["unlabeled"], 0)
    assert calls == [3 * B]  # labeled + weak + strong in ONE forward: BatchNorm sees one batch
    assert torch.allclose(logits, model.net(model.preprocess(batch["labeled"]["image"])), atol=1e-5)
    assert out is not None and out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_label_loss_is_masked_ce_over_the_whole_batch() -> None:
    model = PseudoLabel(rampup_epochs=0, **COMMON)
    model.net = _linear(1)
    unl = make_batch(model.loader_request())["unlabeled"]
    logits = model.net(model.preprocess(unl["image"]))
    confidence, targets = logits.softmax(dim=-1).max(dim=-1)
    model.confidence_threshold = _middle(confidence)
    mask = confidence >= model.confidence_threshold
    assert 0 < int(mask.sum()) < B
    expected = (F.cross_entropy(logits, targets, reduction="none") * mask).sum() / B
    assert model.unlabeled_loss(unl, 0).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_entropy_threshold_binds_inside_the_strategy() -> None:
    model = PseudoLabel(confidence_threshold=0.0, **COMMON)
    model.net = _linear(1, scale=5.0)
    unl = make_batch(model.loader_request())["unlabeled"]
    entropy = normalized_entropy(_probs(model, unl["image"]))
    model.entropy_threshold = _middle(entropy)
    out = model.unlabeled_loss(unl, 0)
    assert float(out.stats["mask_ratio"]) == pytest.approx(float((entropy <= model.entropy_threshold).float().mean()))
    assert 0 < float(out.stats["mask_ratio"]) < 1


def test_distribution_alignment_updates_a_bias_corrected_running_distribution() -> None:
    target = [0.5, 0.3, 0.2]
    model = FixMatch(distribution_alignment=True, da_target=target, da_momentum=0.9, **COMMON)
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(B, K, generator=gen) * 2 for _ in range(2)]
    probs = [x.softmax(dim=-1) for x in logits]
    aligned = [model.weak_targets(x) for x in logits]
    running = [probs[0].mean(0), (0.9 * 0.1 * probs[0].mean(0) + 0.1 * probs[1].mean(0)) / (1 - 0.81)]
    for a, p, r in zip(aligned, probs, running, strict=True):
        expected = p * torch.tensor(target) / r
        assert torch.allclose(a, expected / expected.sum(dim=-1, keepdim=True), atol=1e-6)
    assert int(model.da_updates) == 2
    assert "model_dist" in model.state_dict() and "da_updates" in model.state_dict()


def test_distribution_alignment_is_off_by_default_and_the_target_is_validated() -> None:
    model = FixMatch(**COMMON)
    logits = torch.randn(B, K)
    assert torch.allclose(model.weak_targets(logits), logits.softmax(dim=-1))
    assert model.mu == 7
    with pytest.raises(ValueError, match="da_target"):
        FixMatch(da_target=[1.0, 2.0], **COMMON)


@pytest.mark.parametrize(("step", "decay"), [(0, 0.0), (1, 0.5), (3, 0.75), (9, 0.9), (999, 0.999), (50_000, 0.999)])
def test_ema_decay_warm_up(step: int, decay: float) -> None:
    assert ema_decay_at(step, 0.999) == pytest.approx(decay)


@pytest.mark.parametrize("step", [1, 4, 5000])
def test_mean_teacher_update_uses_the_warm_up_decay_at_that_step(step: int) -> None:
    model = MeanTeacher(ema_decay=0.99, **COMMON)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p))
    teacher = [p.clone() for p in model.teacher.parameters()]
    model._trainer = SimpleNamespace(global_step=step, world_size=1)  # type: ignore[assignment]
    model.on_train_batch_end(None, None, 0)
    decay = min(0.99, 1 - 1 / (step + 1))
    for new, old, s in zip(model.teacher.parameters(), teacher, model.net.parameters(), strict=True):
        assert torch.allclose(new, decay * old + (1 - decay) * s, atol=1e-6)


@pytest.mark.parametrize("epochs", [0.0, 0.75, 1.5, 3.0, 6.0])
def test_mean_teacher_consistency_weight_ramps_up(epochs: float, monkeypatch: pytest.MonkeyPatch) -> None:
    model = MeanTeacher(consistency_weight=10.0, rampup_epochs=3.0, **COMMON)
    monkeypatch.setattr(model, "progress_epochs", lambda: epochs)
    out = model.unlabeled_loss(make_batch(model.loader_request())["unlabeled"], 0)
    t = min(epochs / 3.0, 1.0)
    assert out.weight == pytest.approx(10.0 * math.exp(-5.0 * (1.0 - t) ** 2))


def test_mean_teacher_consistency_covers_the_whole_batch() -> None:
    model = MeanTeacher(rampup_epochs=0, **COMMON)
    model.net, model.teacher = _linear(0, 3.0), _linear(1, 3.0)
    batch = make_batch(model.loader_request())
    lab, unl = batch["labeled"], batch["unlabeled"]
    logits, out = model.labeled_logits_and_unlabeled(lab, unl, 0)
    student = model.net(model.preprocess(torch.cat([lab["image"], unl["image_student"]])))
    teacher = model.teacher(model.preprocess(torch.cat([lab["image_teacher"], unl["image_teacher"]])))
    assert out is not None and torch.allclose(logits, student[:B], atol=1e-5)
    assert out.loss.item() == pytest.approx(softmax_mse(student, teacher).item(), rel=1e-5)
    assert out.loss.item() != pytest.approx(softmax_mse(student[B:], teacher[B:]).item(), rel=1e-3)


def test_softmax_mse_runs_in_float32_under_autocast() -> None:
    s, t = torch.randn(4, K) * 3, torch.randn(4, K) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = softmax_mse(s, t)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(((s.softmax(-1) - t.softmax(-1)) ** 2).sum(-1).mean().item(), rel=1e-6)
