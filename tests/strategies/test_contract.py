"""Contract of every registered strategy (no hand-kept list): one step on a tiny batch has a finite loss; when its
mask is non-empty the unlabeled term sends gradient into the backbone; EMA teachers get no gradient; the batch
views come from the strategy's ``LoaderRequest``, handed to the data in ``setup("fit")``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from strategy_fakes import FakeTrainingData, K, make_batch

from bloodcls.data.interface import LoaderRequest
from bloodcls.strategies import Classifier, ContrastivePretrain, PseudoLabelSkeleton, registered_strategies

COMMON: dict[str, Any] = {"num_classes": K, "backbone": "bloodcls_cnn_tiny"}
# Strategies of the package (a toy strategy defined in a test module registers too, but is not part of the contract).
STRATEGIES = {cls.__name__: cls for name, cls in registered_strategies().items() if name.startswith("bloodcls.")}


def _backbone_grad(model: Classifier) -> float:
    return float(sum(p.grad.abs().sum() for p in model.net.parameters() if p.grad is not None))


def test_every_strategy_of_the_package_is_registered() -> None:
    expected = {"Supervised", "PseudoLabel", "FixMatch", "FlexMatch", "FreeMatch", "MeanTeacher", "SelfTraining"}
    assert expected | {"ContrastivePretrain"} <= set(STRATEGIES)
    assert "PseudoLabelSkeleton" not in STRATEGIES  # a skeleton, not a strategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_one_step_has_finite_loss_and_updates(name: str) -> None:
    torch.manual_seed(0)
    if not getattr(STRATEGIES[name], "trains_backbone", True):
        pytest.skip(f"{name} freezes its backbone (tests/embeddings cover it)")
    model = STRATEGIES[name](**COMMON)
    loss = model.training_step(make_batch(model.loader_request()), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert _backbone_grad(model) > 0
    teacher = getattr(model, "teacher", None)
    if isinstance(teacher, torch.nn.Module):  # EMA teachers follow the student, never the gradient
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_unlabeled_term_sends_gradient_into_the_backbone_when_its_mask_is_non_empty(name: str) -> None:
    torch.manual_seed(0)
    model = STRATEGIES[name](**COMMON)
    if isinstance(model, PseudoLabelSkeleton):  # accept every image: the mask hook is the one place that decides
        model.mask = lambda probs: torch.ones(len(probs), dtype=torch.bool)  # type: ignore[method-assign]
    out = model.unlabeled_loss(make_batch(model.loader_request())["unlabeled"], 0)
    if out is None:
        return  # no unlabeled term (supervised; contrastive pretraining has its own step)
    assert torch.isfinite(out.loss)
    if float(out.stats.get("mask_ratio", 1.0)) == 0:
        return
    assert out.loss.item() > 0
    out.loss.backward()
    assert _backbone_grad(model) > 0, f"{name}: unlabeled loss sends no gradient to the backbone"
    assert "pseudo_acc" in out.stats  # truth of the benchmark pool is logged


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_setup_hands_the_loader_request_to_the_data(name: str) -> None:
    model = STRATEGIES[name](**COMMON)
    data = FakeTrainingData(counts=[4, 2, 2])
    model._trainer = SimpleNamespace(datamodule=data)  # type: ignore[assignment]
    model.setup("fit")
    assert data.request == model.loader_request()


def test_loader_requests_of_the_two_view_strategies() -> None:
    fixmatch = STRATEGIES["FixMatch"](mu=3, **COMMON).loader_request()
    assert fixmatch.unlabeled_views == {"image_weak": "weak", "image_strong": "randaugment"}
    assert fixmatch.unlabeled_ratio == 3.0
    assert STRATEGIES["Supervised"](**COMMON).loader_request() == LoaderRequest()
    assert ContrastivePretrain(mode="supcon", **COMMON).loader_request().unlabeled_views is None


def test_contrastive_unlabeled_term_sends_gradient() -> None:
    model = ContrastivePretrain(mode="simclr", **COMMON)
    loss = model.training_step(make_batch(model.loader_request()), 0)
    loss.backward()
    assert _backbone_grad(model) > 0


def test_empty_mask_gives_zero_unlabeled_loss() -> None:
    model = STRATEGIES["FixMatch"](threshold=1.01, **COMMON)  # nothing can pass
    out = model.unlabeled_loss(make_batch(model.loader_request())["unlabeled"], 0)
    assert out.loss.item() == 0.0 and float(out.stats["mask_ratio"]) == 0.0


def test_supervised_setup_needs_no_datamodule() -> None:
    model = STRATEGIES["Supervised"](**COMMON)
    model._trainer = SimpleNamespace(datamodule=None)  # type: ignore[assignment]
    model.setup("fit")  # plain loaders: nothing to request
    fixmatch = STRATEGIES["FixMatch"](**COMMON)
    fixmatch._trainer = SimpleNamespace(datamodule=None)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="TrainingData"):
        fixmatch.setup("fit")
