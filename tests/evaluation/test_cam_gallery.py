"""The test report's CAM gallery: which cells are kept while the test runs, their Grad-CAMs (also under inference
mode, as in Lightning's test loop), the refusal for networks without a convolutional trunk, and the W&B panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bloodcls.evaluation.cam_gallery import GalleryCollector, build_gallery
from bloodcls.strategies import Supervised


def _batch(probs: list[list[float]], labels: list[int], start: int) -> tuple[dict[str, Any], dict[str, Any]]:
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone() + start
    index = torch.arange(start, start + n)
    batch = {"image": images, "label": torch.tensor(labels), "index": index}
    return batch, {"probs": torch.tensor(probs), "label": torch.tensor(labels), "index": index}


def test_collector_keeps_the_most_confident_correct_and_wrong_cells_per_class() -> None:
    collector = GalleryCollector(per_class=2)
    # Class 0: correct at 0.9, 0.6, 0.95 (over two batches); wrong (called 1) at 0.7 and 0.8.
    collector.update(*_batch([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], [0, 0, 0], start=0))
    collector.update(*_batch([[0.95, 0.05], [0.2, 0.8], [0.1, 0.9]], [0, 0, 1], start=3))
    kept = {(c, k): [(round(x.confidence, 2), x.index) for x in v] for (c, k), v in collector.kept.items()}
    assert kept == {
        (0, "correct"): [(0.95, 3), (0.9, 0)],
        (0, "mistake"): [(0.8, 4), (0.7, 2)],
        (1, "correct"): [(0.9, 5)],
    }
    first = collector.candidates()[0]
    assert first.image.dtype == torch.uint8 and int(first.image[0, 0, 0]) == 3  # its own image, copied
    assert collector.seen == 6
    collector.reset()
    assert collector.candidates() == []


def test_collector_ignores_outputs_without_uint8_images() -> None:
    collector = GalleryCollector()
    batch, outputs = _batch([[0.9, 0.1]], [0], start=0)
    collector.update({**batch, "image": batch["image"].float()}, outputs)
    collector.update(batch, None)
    assert collector.candidates() == []


@pytest.mark.parametrize("inference_mode", [False, True])
def test_gallery_of_a_convolutional_network(inference_mode: bool) -> None:
    pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")
    torch.manual_seed(0)
    model = Supervised(backbone="bloodcls_cnn_tiny", num_classes=2).eval()
    collector = GalleryCollector(per_class=2)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode(inference_mode):  # Lightning runs the test loop's hooks in inference mode
        probs = model(images).softmax(dim=1)
        labels = torch.tensor([0, 1, 0, 1])
        collector.update(
            {"image": images, "label": labels, "index": torch.arange(4)},
            {"probs": probs, "label": labels, "index": torch.arange(4)},
        )
        gallery = build_gallery(collector, model, [f"cell{i}.png" for i in range(4)])
    assert gallery.message is None and len(gallery.cells) == 4
    for cell in gallery.cells:
        assert cell.pair.dtype == np.uint8 and cell.pair.shape == (96, 192, 3)  # 32 px enlarged x3, image | CAM
        assert cell.kind == ("correct" if cell.pred == cell.label else "mistake")
        assert cell.sample.startswith("cell")
        assert not np.array_equal(cell.pair[:, :96], cell.pair[:, 96:])  # the overlay differs from the image


def test_gallery_of_a_network_without_a_trunk_is_a_message() -> None:
    pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")
    model = Supervised(backbone="bloodcls_rnn", num_classes=2).eval()
    collector = GalleryCollector()
    batch, outputs = _batch([[0.9, 0.1]], [0], start=0)
    collector.update({**batch, "image": torch.zeros(1, 3, 32, 32, dtype=torch.uint8)}, outputs)
    gallery = build_gallery(collector, model, None)
    assert gallery.cells == [] and gallery.message is not None
    assert "has no convolutional layer" in gallery.message


def test_html_report_goes_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    from bloodcls.callbacks import wandb as wandb_callbacks

    logged: list[dict[str, Any]] = []
    saved: list[Path] = []

    class Run:
        def log(self, payload: dict[str, Any]) -> None:
            logged.append(payload)

    class Logger:
        experiment = Run()

    monkeypatch.setattr(wandb_callbacks, "wandb_loggers", lambda loggers: list(loggers))
    monkeypatch.setattr(wandb_callbacks, "save_quietly", lambda run, path, base, policy: saved.append(path))
    page = tmp_path / "test" / "report.html"
    page.parent.mkdir()
    page.write_text("<html><body>report</body></html>")
    pair = np.zeros((8, 16, 3), dtype=np.uint8)
    wandb_callbacks.log_html_report([Logger()], page, [("correct", pair), ("mistake", pair), ("correct", pair)])
    [payload] = logged
    assert isinstance(payload["test/html_report"], wandb.Html)
    assert len(payload["test/cam_gallery/correct"]) == 2 and len(payload["test/cam_gallery/mistake"]) == 1
    assert all(isinstance(i, wandb.Image) for i in payload["test/cam_gallery/correct"])
    assert saved == [page]
    wandb_callbacks.log_html_report([], page, [])  # no W&B logger: nothing, and wandb is not needed
    assert len(logged) == 1
