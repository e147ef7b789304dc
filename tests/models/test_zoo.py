"""The model zoo: every registered network honours timm's interface, trains a step, and its configs name real models;
reference tests for the capsule margin loss, DBN contrastive divergence and the recurrent readers."""

from __future__ import annotations

import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
import timm
import torch
import yaml
from conftest import REPO

import bloodcls.models
from bloodcls.callbacks.rbm_pretraining import GreedyRBMPretraining
from bloodcls.cli import main
from bloodcls.errors import UserInputError
from bloodcls.models import create_backbone
from bloodcls.models.capsnet import margin_loss, squash
from bloodcls.models.dbn import DBN, cd_step
from bloodcls.models.recurrent import RecurrentClassifier
from bloodcls.models.zoo import ZOO_MODELS
from bloodcls.strategies import FixMatch, MeanTeacher, Supervised

MODEL_CONFIGS = sorted((REPO / "configs" / "models").glob("*.yaml"))
TIMM_MIN_SIZE = {"inception_v3": 75}  # the other timm configs run from 32 px
# Networks that resize their input internally: any size runs, min_input_size is nominal.
RESIZES_INPUT = frozenset({"bloodcls_rnn", "bloodcls_dbn"})
# Two ImageNet trunks at full size (~45 M parameters): seconds per test, so only in the slow tier.
FULL_SIZE_ONLY = {"bloodcls_hybrid_inception_xception"}


def _zoo(exclude: frozenset[str] = frozenset()) -> list[Any]:
    """ZOO_MODELS as pytest params, the full-size-only networks marked slow."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in FULL_SIZE_ONLY else name
        for name in ZOO_MODELS
        if name not in exclude
    ]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These models are small at test sizes: one thread avoids OpenMP barrier stalls when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _min_size(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.min_input_size[-1] if cfg is not None and cfg.min_input_size else TIMM_MIN_SIZE.get(name, 32)


def _config(path: Path) -> tuple[str, int | None]:
    cfg = yaml.safe_load(path.read_text())
    return cfg["model"]["init_args"]["backbone"], cfg.get("data", {}).get("init_args", {}).get("image_size")


# ---------------------------------------------------------------------------------------------- every network
@pytest.mark.parametrize("name", _zoo())
def test_network_follows_the_timm_interface(name: str) -> None:
    torch.manual_seed(0)
    net: Any = create_backbone(name, num_classes=5).eval()  # timm interface: forward_head, num_features...
    smallest = _min_size(name)
    assert net.pretrained_cfg["min_input_size"][-1] == smallest and net.num_classes == 5
    with torch.no_grad():
        for size in sorted({smallest, max(smallest, 64)}):
            x = torch.randn(2, 3, size, size)
            logits = net(x)
            features = net.forward_features(x)  # whatever the network's features are (map, sequence, vector)
            assert logits.shape == (2, 5) and torch.allclose(net.forward_head(features), logits, atol=1e-5), size
            assert net.forward_head(features, pre_logits=True).shape == (2, net.num_features), size
        net.reset_classifier(3)
        features = net.forward_features(x)  # CapsNet's class capsules (its classifier) live in its features
        assert net.forward_head(features).shape == (2, 3) and net.num_classes == 3
        assert net.forward_head(features, pre_logits=True).shape == (2, net.num_features)
        assert net.get_classifier() is not None


@pytest.mark.parametrize("name", _zoo(exclude=RESIZES_INPUT))
def test_min_input_size_is_the_smallest_that_runs(name: str) -> None:
    net = create_backbone(name, num_classes=5).eval()
    below = _min_size(name) - 1
    with torch.no_grad(), pytest.raises(RuntimeError):
        net(torch.randn(2, 3, below, below))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("name", _zoo())
def test_one_supervised_step_on_uint8_images_is_finite_with_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = Supervised(num_classes=5, backbone=name)
    size = _min_size(name)
    batch = {
        "image": torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8),
        "label": torch.tensor([0, 3]),
        "index": torch.arange(2),
    }
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.net.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    if name == "bloodcls_hybrid_inception_xception":  # both trunks learn
        assert any(n.startswith("inception.") for n in grads) and any(n.startswith("xception.") for n in grads)
    assert model.embed(batch["image"]).shape == (2, model.net.num_features)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("strategy", ["fixmatch", "mean_teacher"])
@pytest.mark.parametrize("name", _zoo())
def test_semi_supervised_step_reaches_every_network_through_its_unlabeled_term(name: str, strategy: str) -> None:
    torch.manual_seed(0)
    common: dict[str, Any] = {"num_classes": 3, "backbone": name}
    model: Any = (
        FixMatch(threshold=0.0, mu=1, **common)
        if strategy == "fixmatch"
        else MeanTeacher(rampup_epochs=0, consistency_weight=1.0, **common)
    )
    size = _min_size(name)
    views = model.loader_request().unlabeled_views
    unlabeled = {key: torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8) for key in views}
    unlabeled |= {"true_label": torch.tensor([0, 1]), "index": torch.arange(2), "pool_index": torch.arange(2)}
    model.train()
    out = model.unlabeled_loss(unlabeled, 0)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.net.parameters() if p.grad is not None) > 0
    if strategy == "mean_teacher":
        assert all(p.grad is None for p in model.teacher.parameters())


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=[p.name for p in MODEL_CONFIGS])
def test_model_config_names_a_model_and_a_size_it_runs_at(path: Path) -> None:
    backbone, image_size = _config(path)
    assert timm.is_model(backbone), backbone
    assert path.stem == backbone  # configs/models/<backbone>.yaml
    assert (image_size or 64) >= _min_size(backbone)  # 64 px: the resolution of the full configs


def test_zoo_is_every_registered_bloodcls_network_and_each_has_a_config() -> None:
    # Every model that a module of bloodcls.models registers carries the bloodcls_ prefix (no squatting in timm's
    # global namespace), and every one of them except the demo CNNs is in the zoo, with a config.
    modules = [m.name for m in pkgutil.iter_modules(bloodcls.models.__path__)]
    registered = set(timm.list_models(module=modules))
    assert registered and all(name.startswith("bloodcls_") for name in registered), sorted(registered)
    assert not timm.is_model("hybrid_inception_xception")
    assert set(ZOO_MODELS) == registered - {"bloodcls_cnn_small", "bloodcls_cnn_tiny"}
    in_configs = {_config(p)[0] for p in MODEL_CONFIGS}
    assert set(ZOO_MODELS) <= in_configs
    # The other configs are the literature's timm backbones, not unlisted bloodcls networks.
    assert not any(name.startswith("bloodcls_") for name in in_configs - set(ZOO_MODELS))


def test_one_small_timm_backbone_from_the_configs_runs() -> None:
    net: Any = create_backbone("convnext_atto", num_classes=5).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert net(x).shape == (2, 5)
        assert net.forward_head(net.forward_features(x), pre_logits=True).shape == (2, net.num_features)


# ---------------------------------------------------------------------------------------------- capsules
def test_margin_loss_matches_hand_computed_values() -> None:
    lengths = torch.tensor([[0.95, 0.3, 0.05], [0.2, 0.6, 0.5]])
    target = torch.tensor([0, 1])
    # row 0: present 0 (0.95 > 0.9); absent 0.5 * 0.2^2 = 0.02 and 0 (0.05 < 0.1)         -> 0.02
    # row 1: present (0.9 - 0.6)^2 = 0.09; absent 0.5 * 0.1^2 = 0.005 and 0.5 * 0.4^2 = 0.08 -> 0.175
    assert margin_loss(lengths, target).item() == pytest.approx((0.02 + 0.175) / 2)
    assert margin_loss(lengths, target, m_plus=1.0, m_minus=0.0, lam=1.0).item() == pytest.approx(
        ((0.05**2 + 0.3**2 + 0.05**2) + (0.2**2 + 0.4**2 + 0.5**2)) / 2
    )


def test_squash_length_and_capsnet_logits_are_length_log_odds() -> None:
    v = squash(torch.tensor([[3.0, 4.0]]))
    assert v.norm().item() == pytest.approx(25 / 26) and torch.allclose(v / v.norm(), torch.tensor([[0.6, 0.8]]))
    torch.manual_seed(0)
    net: Any = create_backbone("bloodcls_capsnet", num_classes=4, conv_channels=16, primary_types=4).eval()
    with torch.no_grad():
        s = net.forward_features(torch.randn(3, 3, 28, 28))  # (B, K, D)
        lengths = squash(s).norm(dim=-1)
        assert torch.allclose(torch.sigmoid(net.forward_head(s)), lengths, atol=1e-5)
        poses = net.forward_head(s, pre_logits=True)
    assert poses.shape == (3, 4 * 16) and torch.allclose(poses.view(3, 4, 16).norm(dim=-1), lengths)


# ---------------------------------------------------------------------------------------------- deep belief net
def _toy_images(n: int = 64, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Two prototype binary patterns with 5 % flipped pixels, as uint8 RGB images (N, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(2, 1, size, size, generator=g) > 0.5
    noise = torch.rand(n, 1, size, size, generator=g) < 0.05
    binary = prototypes[torch.arange(n) % 2] ^ noise
    return (binary.expand(n, 3, size, size).to(torch.uint8) * 255).contiguous()


def test_contrastive_divergence_lowers_reconstruction_error() -> None:
    v = _toy_images(n=128).float().div(255)[:, 0].flatten(1)  # (N, 64) binary visible units
    g = torch.Generator().manual_seed(0)
    weight, h_bias, v_bias = 0.01 * torch.randn(16, 64, generator=g), torch.zeros(16), torch.zeros(64)
    errors = []
    for _ in range(150):
        step = cd_step(v, weight, h_bias, v_bias, k=1, generator=g)
        weight, h_bias, v_bias = (
            weight + 0.1 * step.grad_weight,
            h_bias + 0.1 * step.grad_h_bias,
            v_bias + 0.1 * step.grad_v_bias,
        )
        errors.append(step.recon_error)
    assert errors[0] == pytest.approx(0.25, abs=0.02)  # tiny weights reconstruct every pixel as 0.5
    assert errors[-1] < 0.3 * errors[0]


def test_greedy_pretraining_lowers_every_layers_reconstruction_error() -> None:
    torch.manual_seed(0)
    net = DBN(num_classes=2, img_size=8, hidden=(32, 16))
    images = _toy_images()
    before = net.reconstruction_error(images, layer=0)
    history = net.pretrain_greedy(images, epochs=15, lr=0.1, batch_size=16)
    assert [len(h) for h in history] == [15, 15]
    assert net.reconstruction_error(images, layer=0) < 0.5 * before
    assert history[1][-1] < 0.5 * history[1][0]
    # Fine-tuning starts from the pretrained stack: the classifier's sigmoid layers are the RBMs.
    with torch.no_grad():
        expected = torch.sigmoid(net.layers[1](torch.sigmoid(net.layers[0](net.to_visible(images)))))
        assert torch.allclose(net.forward_features(images), expected)


def test_dbn_pretrains_from_loader_batches_and_generators() -> None:
    net = DBN(num_classes=2, img_size=8, hidden=(16,))
    images = _toy_images(n=32)
    batches = [{"image": images[i : i + 8], "label": torch.zeros(8)} for i in range(0, 32, 8)]
    assert len(net.pretrain_greedy(batches, epochs=2)[0]) == 2
    assert len(net.pretrain_greedy((b["image"] for b in batches), epochs=2)[0]) == 2  # one-shot iterator
    with pytest.raises(ValueError, match="no batches"):
        net.pretrain_greedy([], epochs=1)


def test_dbn_visible_units_ignore_the_input_normalisation() -> None:
    net = DBN(num_classes=2, img_size=28)
    model = Supervised(num_classes=2, backbone="bloodcls_dbn")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    raw, normalised = net.to_visible(images), net.to_visible(model.preprocess(images))
    assert raw.shape == (2, 3 * 28 * 28) and raw.min() >= 0 and raw.max() <= 1
    assert torch.allclose(raw, normalised, atol=1e-5)


# ---------------------------------------------------------------------------------------------- recurrent reader
@pytest.mark.parametrize(("mode", "cell", "bidirectional"), [("rows", "lstm", True), ("patches", "gru", False)])
def test_rnn_reads_rows_or_patches_and_uses_the_final_hidden_state(
    mode: Literal["rows", "patches"], cell: Literal["lstm", "gru"], bidirectional: bool
) -> None:
    torch.manual_seed(0)
    net = RecurrentClassifier(
        num_classes=3, img_size=16, mode=mode, patch_size=4, cell=cell, hidden_size=8, bidirectional=bidirectional
    )
    x = torch.randn(2, 3, 16, 16)
    seq = net.to_sequence(x)
    if mode == "rows":
        assert seq.shape == (2, 16, 3 * 16) and torch.equal(seq[:, 5], x[:, :, 5, :].flatten(1))
    else:
        assert seq.shape == (2, 16, 3 * 4 * 4) and torch.equal(seq[:, 1], x[:, :, :4, 4:8].flatten(1))
    _, h_n = net.rnn(seq)
    h_n = h_n[0] if cell == "lstm" else h_n  # (layers * dirs, B, hidden)
    final = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
    features = net.forward_head(net.forward_features(x), pre_logits=True)
    assert features.shape == (2, net.num_features) == (2, 16 if bidirectional else 8)
    assert torch.allclose(features, final, atol=1e-6)
    assert net(torch.randn(2, 3, 40, 40)).shape == (2, 3)  # other sizes are resized to img_size


def test_rnn_rejects_unknown_mode_and_cell() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        RecurrentClassifier(num_classes=3, mode="columns")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cell must be"):
        RecurrentClassifier(num_classes=3, cell="rnn")  # type: ignore[arg-type]


def test_backbone_kwargs_reach_the_network() -> None:
    from bloodcls.strategies import Supervised

    model = Supervised(num_classes=3, backbone="bloodcls_rnn", backbone_kwargs={"mode": "patches", "cell": "gru"})
    assert any(isinstance(m, torch.nn.GRU) for m in model.net.modules())
    assert not any(isinstance(m, torch.nn.LSTM) for m in model.net.modules())


@pytest.mark.filterwarnings("ignore")
def test_dbn_config_pretrains_the_rbms_on_training_images_before_fine_tuning(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--config",
            str(REPO / "configs" / "models" / "bloodcls_dbn.yaml"),
            "--data.source.per_class=12",
            "--data.init_args.num_workers=0",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={runs}",
        ]
    )
    state = torch.load(runs / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    # Only greedy pretraining touches the visible biases (buffers); it starts them at the data's log-odds.
    for i in range(2):
        assert state["state_dict"][f"net.v_bias_{i}"].abs().sum() > 0, i


def test_rbm_pretraining_refuses_a_backbone_without_rbms() -> None:
    model = Supervised(num_classes=3, backbone="bloodcls_cnn_tiny")
    trainer = SimpleNamespace(ckpt_path=None, datamodule=None)
    with pytest.raises(UserInputError, match="has no RBMs to pretrain; use model.init_args.backbone bloodcls_dbn"):
        GreedyRBMPretraining().on_fit_start(trainer, model)  # type: ignore[arg-type]
