"""Mean Teacher: the EMA teacher gets no gradient, follows the student, keeps BatchNorm statistics of its own
activations (why the EMA is hand-written, not timm's), evaluates; the label-propagation term is a masked CE."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from strategy_fakes import B, K, make_batch

from bloodcls.strategies import MeanTeacher

COMMON: dict[str, Any] = {"num_classes": K, "backbone": "bloodcls_cnn_tiny"}


def _backbone_grad(model: MeanTeacher) -> float:
    return float(sum(p.grad.abs().sum() for p in model.net.parameters() if p.grad is not None))


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_mean_teacher_teacher_gets_no_gradient_and_follows_student() -> None:
    torch.manual_seed(0)
    model = MeanTeacher(ema_decay=0.9, rampup_epochs=0, **COMMON)
    optimizer = torch.optim.SGD(model.net.parameters(), lr=0.5)
    before = [p.clone() for p in model.teacher.parameters()]
    loss = model.training_step(make_batch(model.loader_request()), 0)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    optimizer.step()
    dist_before = sum((t - s).abs().sum() for t, s in zip(before, model.net.parameters(), strict=True))
    model.after_optimizer_step()  # what on_train_batch_end calls once per optimizer step
    after = list(model.teacher.parameters())
    dist_after = sum((t - s).abs().sum() for t, s in zip(after, model.net.parameters(), strict=True))
    assert dist_after < dist_before  # the EMA moved the teacher toward the student
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_mean_teacher_evaluates_with_teacher() -> None:
    model = MeanTeacher(**COMMON)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(1.0)
    x = _images(2, 0)
    model.eval()
    assert torch.allclose(model(x), model.teacher(model.preprocess(x)))
    model.train()
    assert torch.allclose(model(x), model.net(model.preprocess(x)))


def test_mean_teacher_keeps_batchnorm_statistics_of_its_own_activations() -> None:
    # The EMA teacher lags the student; pairing its weights with the student's BN statistics broke eval-mode
    # predictions on PBC (29 % accuracy). Its running statistics must come from its own forward passes.
    torch.manual_seed(0)
    model = MeanTeacher(ema_decay=0.99, rampup_epochs=0, **COMMON)
    model.train()

    def running_means(net: torch.nn.Module) -> list[torch.Tensor]:
        return [m.running_mean.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    for module in model.net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(7.0)  # a student statistic the teacher must not inherit
    before = running_means(model.teacher)
    model.unlabeled_loss(
        make_batch(model.loader_request())["unlabeled"], 0
    )  # student and teacher forwards, in train mode
    model.after_optimizer_step()  # what on_train_batch_end calls once per optimizer step
    teacher, student = running_means(model.teacher), running_means(model.net)
    assert teacher and all(not torch.equal(t, s) for t, s in zip(teacher, student, strict=True))
    assert all(not torch.equal(t, b) for t, b in zip(teacher, before, strict=True))  # its own forward updated them
    assert all(t.abs().max() < 5.0 for t in teacher)


def test_mean_teacher_propagation_term_is_a_masked_cross_entropy_with_gradient() -> None:
    torch.manual_seed(0)
    model = MeanTeacher(rampup_epochs=0, lp_weight=2.0, **COMMON)
    batch = make_batch(model.loader_request())["unlabeled"]
    model.lp_labels = torch.tensor([2, -1, 0, -1, 1, 1])  # pool positions 0..5 = this batch's pool_index
    out = model.unlabeled_loss(batch, 0)
    out.loss.backward()
    assert _backbone_grad(model) > 0
    # Reference: by hand, images without an accepted label contribute 0 and the mean is over the whole batch.
    logits = model.net(model.preprocess(batch["image_student"])).detach()
    accepted = [0, 2, 4, 5]
    ce = torch.nn.functional.cross_entropy(logits[accepted], model.lp_labels[accepted], reduction="sum") / B
    torch.testing.assert_close(out.stats["loss_lp"], ce, rtol=1e-5, atol=1e-6)
    assert float(out.stats["lp_mask_ratio"]) == pytest.approx(4 / 6)
    consistency = model.consistency_weight * out.stats["loss_consistency"]
    torch.testing.assert_close(out.loss.detach(), consistency + 2.0 * ce, rtol=1e-5, atol=1e-6)
    # Both weights are inside the loss; train/unsup_weight shows the consistency weight, not the 1 it is scaled by.
    assert out.weight == 1.0 and out.logged_weight == model.consistency_weight


def test_training_step_logs_the_consistency_weight_when_the_loss_carries_two_terms(monkeypatch: Any) -> None:
    torch.manual_seed(0)
    model = MeanTeacher(rampup_epochs=0, lp_weight=2.0, consistency_weight=7.0, **COMMON)
    model.lp_labels = torch.tensor([2, -1, 0, -1, 1, 1])
    logged: dict[str, Any] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.__setitem__(name, value))
    model.training_step(make_batch(model.loader_request()), 0)
    assert logged["train/unsup_weight"] == 7.0 and "train/loss_lp" in logged


def test_mean_teacher_without_propagated_labels_is_plain_mean_teacher() -> None:
    model = MeanTeacher(rampup_epochs=0, lp_weight=1.0, **COMMON)  # no relabeling has happened yet
    out = model.unlabeled_loss(make_batch(model.loader_request())["unlabeled"], 0)
    assert out.weight == model.consistency_weight and "loss_lp" not in out.stats
    assert MeanTeacher(**COMMON).configure_callbacks() == []
    with pytest.raises(ValueError, match="lp_weight"):
        MeanTeacher(lp_weight=-1.0, **COMMON)


def test_timm_model_ema_copies_student_batchnorm_statistics() -> None:
    # Why ema.ema_update is hand-written: timm's ModelEmaV3 with exclude_buffers copies the student's BN
    # statistics into the EMA model (and without it averages them). Should timm change, revisit ema_update.
    from timm.utils import ModelEmaV3

    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEmaV3(student, decay=0.9, exclude_buffers=True)
    ema.module[1].running_mean.fill_(1.0)  # the teacher's own statistics
    student[1].running_mean.fill_(7.0)
    ema.update(student)
    assert torch.equal(ema.module[1].running_mean, student[1].running_mean)  # its own statistics are gone
