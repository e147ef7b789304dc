"""One door for networks: names, pretrained weights from a local file, a URL (local server), offline errors, and
the pretrained config deciding input size and normalisation."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import REPO
from jsonargparse import Namespace

from bloodcls.cli import _resolve_image_size, main
from bloodcls.errors import UserInputError
from bloodcls.models import available_backbones, create_backbone, pretrained_input_size


@pytest.fixture
def weights_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()


def test_bloodcls_models_are_in_timm_registry() -> None:
    assert {"bloodcls_cnn_small", "bloodcls_cnn_tiny"} <= set(available_backbones("bloodcls_*"))
    model = create_backbone("bloodcls_cnn_small", 8)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 8)
    assert model.forward_head(model.forward_features(torch.zeros(1, 3, 32, 32)), pre_logits=True).shape == (1, 128)


def test_local_weights_file_loads_trunk_and_resets_head(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = create_backbone("test_resnet", 4, pretrained_weights=str(tmp_path / "w.pth"))
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 4


def test_weights_from_url_go_through_the_download_path(
    weights_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, folder = weights_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    source = timm.create_model("bloodcls_cnn_tiny", num_classes=5)
    torch.save(source.state_dict(), folder / "tiny-abc123.pth")
    model = create_backbone("bloodcls_cnn_tiny", 5, pretrained_weights=f"{url}/tiny-abc123.pth")
    for (name, a), b in zip(model.state_dict().items(), source.state_dict().values(), strict=True):
        if not name.startswith("fc."):  # timm re-initialises the head of a 1000-class pretrained config
            assert torch.equal(a, b), name
    assert list((tmp_path / "torch_home").rglob("tiny-abc123.pth"))  # cached like any hub download


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_weights_whose_pickle_runs_code_are_refused_from_a_file_and_a_url(
    weights_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, folder = weights_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    marker = tmp_path / "pwned"
    state = {**timm.create_model("bloodcls_cnn_tiny", num_classes=5).state_dict(), "x": _Payload(marker)}
    torch.save(state, folder / "evil-abc123.pth")
    with pytest.raises(UserInputError, match=r"^model.pretrained_weights: refusing to unpickle arbitrary objects"):
        create_backbone("bloodcls_cnn_tiny", 5, pretrained_weights=str(folder / "evil-abc123.pth"))
    with pytest.raises(UserInputError, match=r"^model.pretrained_weights: refusing to unpickle arbitrary objects"):
        create_backbone("bloodcls_cnn_tiny", 5, pretrained_weights=f"{url}/evil-abc123.pth")
    assert not marker.exists()


def test_missing_weights_file_and_offline_hub_have_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserInputError, match="pretrained_weights: .*missing.pth does not exist"):
        create_backbone("test_resnet", 3, pretrained_weights=str(tmp_path / "missing.pth"))
    import huggingface_hub.constants

    # What an offline machine sees, without waiting for the hub client's network retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError, match="could not load weights for 'test_resnet'.*model.pretrained_weights"):
        create_backbone("test_resnet", 3, pretrained=True)


def test_one_class_head_is_refused() -> None:
    with pytest.raises(UserInputError, match="at least 2 classes"):
        create_backbone("bloodcls_cnn_tiny", 1)


def test_pretrained_input_size_comes_from_the_weights_config() -> None:
    assert pretrained_input_size("resnet50") == 224 and pretrained_input_size("inception_v3") == 299
    assert pretrained_input_size("test_resnet") == 160 and pretrained_input_size("no_such_net") is None


@pytest.mark.parametrize(
    ("model_args", "image_size", "expected"),
    [
        ({"backbone": "test_resnet", "pretrained": True}, None, 160),
        ({"backbone": "test_resnet", "pretrained_weights": "w.pth"}, None, 160),
        ({"backbone": "test_resnet", "pretrained": False}, None, 64),  # untrained: the platform default
        ({"backbone": "test_resnet", "pretrained": True}, 96, 96),  # an explicit size always wins
    ],
)
def test_cli_resolves_a_null_image_size_from_the_pretrained_config(
    model_args: dict[str, object], image_size: int | None, expected: int
) -> None:
    config = Namespace(
        model=Namespace(init_args=Namespace(**{"pretrained": False, "pretrained_weights": None, **model_args})),
        data=Namespace(init_args=Namespace(image_size=image_size)),
    )
    _resolve_image_size(config)
    assert config.data.init_args.image_size == expected


# A whole CLI fit at 160 px (the resolution rule alone is the fast test above).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_pretrained_fit_trains_at_the_weights_input_size_with_their_normalisation(tmp_path: Path) -> None:
    # test_resnet's pretrained config: 160 px, mean = std = 0.5 -- both differ from the 64 px ImageNet defaults.
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), tmp_path / "w.pth")
    runs = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--model.init_args.backbone=test_resnet",
            f"--model.init_args.pretrained_weights={tmp_path / 'w.pth'}",
            "--data.init_args.image_size=null",
            "--data.source.per_class=6",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={runs}",
        ]
    )
    run = runs / "quickstart" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["init_args"]["image_size"] == 160  # resolved, so `bloodcls test` reuses the number
    assert json.loads((run / "data_report.json").read_text())["image_size"] == 160
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert torch.allclose(state["mean"].flatten(), torch.full((3,), 0.5 * 255))
    assert torch.allclose(state["std"].flatten(), torch.full((3,), 0.5 * 255))
