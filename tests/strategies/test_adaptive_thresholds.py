"""FlexMatch and FreeMatch thresholds against hand computations on tiny tensors; their state is in the checkpoint."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from strategy_fakes import K, make_batch

from bloodcls.strategies import FlexMatch, FreeMatch, SoftMatch
from bloodcls.strategies.flexmatch import flexmatch_class_effects
from bloodcls.strategies.freematch import fairness_loss, freematch_mask
from bloodcls.strategies.softmatch import softmatch_weights

COMMON: dict[str, Any] = {"num_classes": K, "backbone": "bloodcls_cnn_tiny"}
PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.15, 0.65], [0.34, 0.33, 0.33]])


def test_flexmatch_class_effects_with_and_without_warm_up() -> None:
    selected = torch.tensor([0, 0, 1, -1, -1, -1, -1, 0, 2])  # counts 3, 1, 1; 4 images never confident
    assert torch.allclose(flexmatch_class_effects(selected, 3, warmup=True), torch.tensor([0.75, 0.25, 0.25]))
    assert torch.allclose(flexmatch_class_effects(selected, 3, warmup=False), torch.tensor([1.0, 1 / 3, 1 / 3]))
    assert torch.equal(flexmatch_class_effects(torch.full((4,), -1), 3, warmup=True), torch.zeros(3))


def test_flexmatch_mask_uses_per_class_thresholds() -> None:
    model = FlexMatch(threshold=0.9, **COMMON)
    model.classwise_acc.copy_(torch.tensor([0.75, 0.25, 0.25]))
    # thresholds 0.9 * M(beta): class 0 0.9 * 0.75 / 1.25 = 0.54, classes 1 and 2 0.9 * 0.25 / 1.75 = 0.1286
    assert model.mask(PROBS).tolist() == [True, False, True, False]
    model.classwise_acc.fill_(1.0)  # every class learned: FixMatch's fixed threshold
    assert model.mask(PROBS).tolist() == [False, False, False, False]


def test_flexmatch_observe_records_confident_predictions_and_is_in_the_checkpoint() -> None:
    model = FlexMatch(threshold=0.55, **COMMON)
    model.observe(PROBS, {"pool_index": torch.tensor([0, 1, 2, 5])})
    # confident (>= 0.55): pool images 0 (class 0) and 2 (class 2); 4 of the 6 known images unused
    assert model.selected_label.tolist() == [0, -1, 2, -1, -1, -1]
    assert torch.allclose(model.classwise_acc, torch.tensor([0.25, 0.0, 0.25]))
    state = model.state_dict()
    restored = FlexMatch(threshold=0.55, **COMMON)
    restored.load_state_dict(state)  # the pool size comes from the checkpoint
    assert torch.equal(restored.selected_label, model.selected_label)
    assert torch.equal(restored.classwise_acc, model.classwise_acc)


def test_freematch_mask_is_global_times_normalised_local_threshold() -> None:
    probs = torch.tensor([[0.45, 0.35, 0.2], [0.2, 0.35, 0.45], [0.3, 0.4, 0.3], [0.49, 0.3, 0.21]])
    # time_p 0.5, p_model / max = (1, 0.6, 0.4): thresholds 0.5, 0.3, 0.2 for classes 0, 1, 2
    mask = freematch_mask(probs, torch.tensor(0.5), torch.tensor([0.5, 0.3, 0.2]))
    assert mask.tolist() == [False, True, True, False]


def test_freematch_observe_updates_the_emas_from_one_over_k() -> None:
    model = FreeMatch(ema_p=0.9, **COMMON)
    model.observe(PROBS, {})
    start = 1.0 / K
    assert float(model.time_p) == pytest.approx(0.9 * start + 0.1 * (0.6 + 0.5 + 0.65 + 0.34) / 4)
    assert torch.allclose(model.p_model, 0.9 * start + 0.1 * PROBS.mean(0))
    assert torch.allclose(model.label_hist, 0.9 * start + 0.1 * torch.tensor([0.75, 0.0, 0.25]))
    assert {"time_p", "p_model", "label_hist"} <= set(model.state_dict())


def test_freematch_fairness_term_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.3, 0.2]]))
    mask = torch.tensor([True, True, False])
    p_model, label_hist = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.5, 0.25, 0.25])
    # accepted strong predictions: classes 0 and 1 -> histogram (1/2, 1/2, 0); mean probability (0.4, 0.4, 0.2)
    mean = [0.4 / 0.5, 0.4 / 0.5, 0.0]  # scaled by 1 / histogram (inf -> 0)
    mean = [m / sum(mean) for m in mean]
    model = [0.5 / 0.5, 0.3 / 0.25, 0.2 / 0.25]
    model = [m / sum(model) for m in model]
    expected = sum(p * math.log(q + 1e-12) for p, q in zip(model, mean, strict=True))
    assert fairness_loss(logits, mask, p_model, label_hist).item() == pytest.approx(expected, rel=1e-5)
    assert fairness_loss(logits, torch.zeros(3, dtype=torch.bool), p_model, label_hist).item() == 0.0


def test_freematch_folds_both_weights_into_its_loss_and_logs_lambda_u() -> None:
    torch.manual_seed(0)
    model = FreeMatch(lambda_u=2.0, lambda_e=0.5, **COMMON)
    out = model.unlabeled_loss(make_batch(model.loader_request())["unlabeled"], 0)
    assert out.weight == 1.0 and out.logged_weight == 2.0  # train/unsup_weight shows lambda_u, not the folded 1
    assert "loss_fairness" in out.stats


def test_softmatch_weights_are_one_above_the_mean_and_a_truncated_gaussian_below() -> None:
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]])
    mu, var, n_sigma = torch.tensor(0.6), torch.tensor(0.04), 2.0
    weights = softmatch_weights(probs, mu, var, n_sigma)
    by_hand = [1.0, math.exp(-(0.1**2) / (2 * 0.04 / 4)), math.exp(-(0.26**2) / (2 * 0.04 / 4))]
    assert weights.tolist() == pytest.approx(by_hand, rel=1e-5)


def test_softmatch_observe_tracks_mean_and_unbiased_variance_and_weights_respond() -> None:
    model = SoftMatch(ema_p=0.9, **COMMON)
    assert float(model.conf_mean) == pytest.approx(1.0 / K) and float(model.conf_var) == 1.0
    model.observe(PROBS, {})
    confidence = torch.tensor([0.6, 0.5, 0.65, 0.34])
    assert float(model.conf_mean) == pytest.approx(0.9 / K + 0.1 * float(confidence.mean()))
    assert float(model.conf_var) == pytest.approx(0.9 + 0.1 * float(confidence.var(unbiased=True)))
    assert {"conf_mean", "conf_var"} <= set(model.state_dict())
    # A wide variance weighs everything near 1; a narrow one below a high mean weighs the uncertain rows down.
    model.conf_mean.fill_(0.62)
    model.conf_var.fill_(1.0)
    assert bool((model.mask(PROBS) > 0.85).all())
    model.conf_var.fill_(0.001)
    weights = model.mask(PROBS)
    assert weights[2] == 1.0 and weights[3] < 0.01


def test_softmatch_unlabeled_loss_is_the_weighted_batch_mean_with_gradient() -> None:
    torch.manual_seed(0)
    model = SoftMatch(ema_p=0.0, **COMMON)  # ema_p 0: this batch's statistics
    logits = torch.randn(4, K, requires_grad=True)
    out = model.unlabeled_output(logits, PROBS, {})
    confidence = torch.tensor([0.6, 0.5, 0.65, 0.34])
    weights = softmatch_weights(PROBS, confidence.mean(), confidence.var(unbiased=True), 2.0)
    ce = torch.nn.functional.cross_entropy(logits, PROBS.argmax(1), reduction="none")
    assert out.loss.item() == pytest.approx(float((ce * weights).sum() / 4), rel=1e-5)  # over all 4, not sum(w)
    out.loss.backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_softmatch_alignment_shapes_the_weights_but_not_the_pseudo_labels() -> None:
    """USB's SoftMatch: uniform alignment feeds the weights; the pseudo-label is the raw weak-view argmax."""
    torch.manual_seed(0)
    model = SoftMatch(ema_p=0.0, distribution_alignment=True, da_momentum=0.9, **COMMON)
    raw = torch.tensor([[0.9, 0.05, 0.05]] * 3 + [[0.5, 0.45, 0.05]])
    aligned = model.weak_targets(raw.log())  # first update: the bias-corrected running mean is this batch's mean
    expected_aligned = raw / raw.mean(0)
    expected_aligned = expected_aligned / expected_aligned.sum(1, keepdim=True)
    assert torch.allclose(aligned, expected_aligned, atol=1e-5)
    assert int(aligned[3].argmax()) == 1 and int(raw[3].argmax()) == 0  # alignment flips the last image
    strong = torch.randn(4, K, requires_grad=True)
    out = model.unlabeled_output(strong, aligned, {})
    confidence = aligned.max(1).values
    weights = softmatch_weights(aligned, confidence.mean(), confidence.var(unbiased=True), 2.0)
    ce = torch.nn.functional.cross_entropy(strong, raw.argmax(1), reduction="none")
    assert out.loss.item() == pytest.approx(float((ce * weights).sum() / 4), rel=1e-5)
    # the next step without alignment state left over: plain argmax of what it is given
    assert torch.equal(model.pseudo_targets(aligned), aligned.argmax(1))


def test_flexmatch_masks_with_the_previous_steps_effects_then_updates_them() -> None:
    """USB's FlexMatch masking(): the mask uses the class effects so far, then this step's confident predictions
    update them."""
    model = FlexMatch(threshold=0.55, **COMMON)
    model._resize_pool(4)  # a pool of 4 images, none confidently predicted yet
    model.classwise_acc.fill_(1.0)  # the effects so far: every class learned, the fixed threshold 0.55 for all
    out = model.unlabeled_output(torch.zeros(4, K), PROBS, {"pool_index": torch.tensor([0, 1, 2, 3])})
    # with the effects so far only 0.6 and 0.65 pass; had this step's update come first (beta 0.5 / 0 / 0.5,
    # thresholds 0.18 / 0 / 0.18) all four would
    assert out.stats["mask_ratio"] == pytest.approx(0.5)
    assert torch.allclose(model.classwise_acc, torch.tensor([0.5, 0.0, 0.5]))  # then updated: 2 unused of 4


@pytest.mark.parametrize(
    ("strategy", "argument"),
    [(FlexMatch, "entropy_threshold"), (FreeMatch, "threshold"), (FreeMatch, "entropy_threshold"),
     (SoftMatch, "threshold"), (SoftMatch, "entropy_threshold")],
)  # fmt: skip
def test_arguments_an_adaptive_strategy_replaces_warn_instead_of_doing_nothing(strategy: Any, argument: str) -> None:
    with pytest.warns(UserWarning, match=f"{strategy.__name__} ignores model.{argument}=0.5"):
        strategy(**{argument: 0.5}, **COMMON)


def test_flexmatch_takes_its_upper_threshold_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FlexMatch(threshold=0.9, **COMMON)
        FreeMatch(**COMMON)


def test_softmatch_variance_over_ddp_ranks_is_that_of_all_their_images() -> None:
    """Two ranks whose confidences differ in mean: the variance of the union, not the mean of the two variances."""
    from types import SimpleNamespace

    from bloodcls.strategies.softmatch import confidence_mean_and_variance

    here = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.85, 0.1, 0.05]])
    there = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25], [0.45, 0.3, 0.25]])
    there_conf = there.max(1).values
    there_sums = torch.stack([there_conf.sum(), (there_conf**2).sum(), torch.tensor(3.0)])
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: (t + there_sums) / 2)  # the mean over the two ranks
    mean, var = confidence_mean_and_variance(here, SimpleNamespace(world_size=2, strategy=strategy))  # shift 0
    union = torch.cat([here.max(1).values, there_conf])
    assert mean.item() == pytest.approx(union.mean().item(), rel=1e-6)
    assert var.item() == pytest.approx(union.var(unbiased=True).item(), rel=1e-5)
    alone_mean, alone_var = confidence_mean_and_variance(here, None, shift=0.8)  # near the mean: no cancellation
    assert alone_mean.item() == pytest.approx(0.85, rel=1e-6)
    assert alone_var.item() == pytest.approx(here.max(1).values.var(unbiased=True).item(), rel=1e-5)
