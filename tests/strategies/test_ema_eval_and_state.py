"""The EMA evaluation model (used by test / predict / export, in the checkpoint), the entropy bound and its warning,
contrastive checkpoints refusing to evaluate, and self-training: pseudo-labels surviving a resume, its LR schedule
with and without restarts, relabeling with the network validation judges."""

from __future__ import annotations

import io
import warnings
from types import SimpleNamespace
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from strategy_fakes import SIZE, FakeTrainingData, K

from bloodcls.callbacks.self_training_rounds import SelfTrainingRounds
from bloodcls.commands.onnx_graph import ProbabilitiesModel
from bloodcls.errors import UserInputError
from bloodcls.strategies import ContrastivePretrain, PseudoLabel, SelfTraining, Supervised
from bloodcls.strategies.ssl_losses import entropy_bound, normalized_entropy

COMMON: dict[str, Any] = {"num_classes": K, "backbone": "bloodcls_cnn_tiny"}


def _images(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def test_ema_eval_outputs_are_the_ema_networks_and_it_is_in_the_checkpoint(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = Supervised(ema_eval=True, **COMMON)
    assert model.ema_net is not None and all(not p.requires_grad for p in model.ema_net.parameters())
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p))  # the network moves away from its EMA
    x = _images()
    model.eval()
    ema_out = model.ema_net(model.preprocess(x))
    assert torch.allclose(model(x), ema_out)
    assert not torch.allclose(model.net(model.preprocess(x)), ema_out)
    batch = {"image": x, "label": torch.zeros(4, dtype=torch.long), "index": torch.arange(4)}
    assert torch.allclose(model.test_step(batch, 0)["probs"], ema_out.softmax(dim=1))
    assert torch.allclose(model.predict_step(batch, 0)["probs"], ema_out.softmax(dim=1))
    assert torch.allclose(ProbabilitiesModel(model)(x), ema_out.softmax(dim=1))  # what export traces
    ema_features = model.ema_net.forward_head(model.ema_net.forward_features(model.preprocess(x)), pre_logits=True)
    assert torch.allclose(model.embed(x), ema_features)  # bloodcls embed and the frozen heads see the EMA too
    assert not torch.allclose(model.train().embed(x), ema_features)  # training (label propagation): the network
    model.eval()
    path = tmp_path / "ema.ckpt"
    state = {k: v for k, v in model.state_dict().items()}
    assert any(k.startswith("ema_net.") for k in state)
    checkpoint = {"state_dict": state, "hyper_parameters": dict(model.hparams)}
    torch.save(checkpoint | {"pytorch-lightning_version": lightning.__version__}, path)
    loaded = Supervised.load_from_checkpoint(path, weights_only=True).eval()
    assert torch.allclose(loaded(x), ema_out, atol=1e-6)


def test_ema_eval_update_averages_parameters_and_batchnorm_statistics() -> None:
    model = Supervised(ema_eval=True, ema_eval_decay=0.9, **COMMON)
    assert model.ema_net is not None
    with torch.no_grad():
        for t in [*model.net.parameters(), *(b for b in model.net.buffers() if b.is_floating_point())]:
            t.add_(1.0)
    before = [t.clone() for t in model.ema_net.state_dict().values()]
    model._trainer = SimpleNamespace(global_step=4, world_size=1)  # type: ignore[assignment]
    model.on_train_batch_end(None, None, 0)
    decay = 0.8  # min(0.9, 1 - 1/5)
    for (name, new), old in zip(model.ema_net.state_dict().items(), before, strict=True):
        src = model.net.state_dict()[name]
        if new.is_floating_point():
            assert torch.allclose(new, decay * old + (1 - decay) * src, atol=1e-6), name
    assert Supervised(**COMMON).ema_net is None  # off by default


def test_entropy_bound_reference_values_and_tightness() -> None:
    assert entropy_bound(0.95, 8) == pytest.approx(0.1423, abs=1e-4)
    assert entropy_bound(0.9, 8) == pytest.approx(0.2499, abs=1e-4)
    assert entropy_bound(1.0, 8) == pytest.approx(0.0)
    assert entropy_bound(0.1, 8) == pytest.approx(1.0)  # below 1/K: anything goes
    c = 0.7
    extreme = torch.tensor([[c, *([(1 - c) / 7] * 7)]])
    assert float(normalized_entropy(extreme)) == pytest.approx(entropy_bound(c, 8), rel=1e-5)
    gen = torch.Generator().manual_seed(0)
    probs = (torch.randn(2000, 8, generator=gen) * 3).softmax(dim=-1)
    confident = probs[probs.max(dim=-1).values >= c]
    assert len(confident) > 0 and float(normalized_entropy(confident).max()) <= entropy_bound(c, 8) + 1e-6


def test_strategies_warn_when_the_entropy_filter_cannot_bind() -> None:
    with pytest.warns(UserWarning, match="never rejects"):
        PseudoLabel(confidence_threshold=0.95, entropy_threshold=0.3, num_classes=8, backbone="bloodcls_cnn_tiny")
    with pytest.warns(UserWarning, match="never rejects"):
        SelfTraining(confidence_threshold=0.9, entropy_threshold=0.5, num_classes=8, backbone="bloodcls_cnn_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PseudoLabel(confidence_threshold=0.8, entropy_threshold=0.3, num_classes=8, backbone="bloodcls_cnn_tiny")
        PseudoLabel(confidence_threshold=0.95, entropy_threshold=1.0, num_classes=8, backbone="bloodcls_cnn_tiny")


def test_self_training_lr_restarts_every_round_or_runs_one_cosine() -> None:
    # 12 epochs of 10 steps, rounds of 3 epochs, 5 warm-up steps: 4 rounds of 30 steps each.
    factors: dict[bool, list[float]] = {}
    for restarts in (True, False):
        model = SelfTraining(
            epochs_per_round=3, lr_restarts=restarts, confidence_threshold=0.7, entropy_threshold=0.4, **COMMON
        )
        model.trainer = SimpleNamespace(max_epochs=12)  # type: ignore[assignment]
        factor = model.lr_multiplier(120, 5)
        factors[restarts] = [factor(step) for step in range(120)]
    restarted, single = factors[True], factors[False]
    assert restarted[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # warm-up in the first round only
    assert [restarted[s] for s in (30, 60, 90)] == [1.0, 1.0, 1.0]  # back to the peak at each round start
    assert restarted[29] < 0.01
    assert single[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(b <= a for a, b in zip(single[4:], single[5:], strict=False))  # never rises again after warm-up
    assert single[60] == pytest.approx(0.5, abs=0.05) and single[119] < 0.01  # one cosine over the 120 steps


@pytest.mark.parametrize("ema_eval", [False, True])
def test_self_training_relabels_with_the_network_validation_judges(ema_eval: bool, monkeypatch: Any) -> None:
    from bloodcls.strategies import self_training

    model = SelfTraining(ema_eval=ema_eval, confidence_threshold=0.7, entropy_threshold=0.4, **COMMON)
    used: list[Any] = []
    monkeypatch.setattr(self_training, "backbone", lambda net: net)
    monkeypatch.setattr(self_training, "relabel_pool", lambda module, net, data, settings: used.append(net))
    monkeypatch.setattr(model, "training_data", lambda: None)
    model.relabel()
    assert used == [model.ema_net if ema_eval else model.net] and (model.ema_net is not None) == ema_eval


def test_contrastive_checkpoints_refuse_to_evaluate_an_untrained_head() -> None:
    model = ContrastivePretrain(**COMMON)
    model.train()
    assert model(_images()).shape == (4, K)
    model.eval()
    with pytest.raises(UserInputError, match="backbone_checkpoint"):
        model(_images())
    with pytest.raises(UserInputError, match="fine-tune"):
        ProbabilitiesModel(model)(_images())


def test_self_training_pseudo_labels_survive_a_resume() -> None:
    data = FakeTrainingData(counts=[2, 2, 2])
    data.set_pseudo_labels(np.array([3, 5, 8]), np.array([0, 2, 1]), np.array([1.0, 0.5, 0.25], np.float32), 0.4)
    rounds = SelfTrainingRounds()
    rounds.round = 2
    trainer = SimpleNamespace(datamodule=data)
    rounds.setup(trainer, None, "fit")  # type: ignore[arg-type]
    buffer = io.BytesIO()
    torch.save(rounds.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # checkpoints load with weights_only=True
    fresh_data = FakeTrainingData(counts=[2, 2, 2])
    resumed = SelfTrainingRounds()
    resumed.load_state_dict(state)
    resumed.on_fit_start(SimpleNamespace(datamodule=fresh_data), None)  # type: ignore[arg-type]
    pseudo = fresh_data.pseudo_labels
    assert resumed.round == 2 and pseudo is not None
    assert pseudo.positions.tolist() == [3, 5, 8] and pseudo.labels.tolist() == [0, 2, 1]
    assert np.allclose(pseudo.weights, [1.0, 0.5, 0.25]) and pseudo.labeled_ratio == pytest.approx(0.4)


@pytest.mark.parametrize("strategy", ["ema_eval", "mean_teacher"])
def test_averages_follow_optimizer_steps_not_accumulated_batches(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accumulate_grad_batches 2: global_step after each batch is 1, 1, 2, 2 (resumed at 0); the weight averages
    must fold the weights in once per optimizer step, not once per batch (that would square the decay)."""
    from bloodcls.strategies import MeanTeacher
    from bloodcls.strategies import base as base_module
    from bloodcls.strategies import mean_teacher as mean_teacher_module

    model = Supervised(ema_eval=True, **COMMON) if strategy == "ema_eval" else MeanTeacher(**COMMON)
    updates: list[int] = []
    module = base_module if strategy == "ema_eval" else mean_teacher_module
    monkeypatch.setattr(module, "ema_update", lambda *args, **kwargs: updates.append(model.global_step))
    trainer = SimpleNamespace(global_step=0, world_size=1)
    model._trainer = trainer  # type: ignore[assignment]
    model.on_train_start()
    for step in (0, 1, 1, 2, 2):  # batch 0 ends before the first step of accumulation 2 ... batch 4
        trainer.global_step = step
        model.on_train_batch_end(None, None, 0)
    assert updates == [1, 2]
    trainer.global_step = 40  # a run resumed from step 40: nothing to fold in until its first step
    model.on_train_start()
    model.on_train_batch_end(None, None, 0)
    assert updates == [1, 2]
