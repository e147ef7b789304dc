"""One door for networks: names, pretrained weights from a local file, a URL (local server), offline errors."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from bloodcls.errors import UserInputError
from bloodcls.models import available_backbones, create_backbone


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
