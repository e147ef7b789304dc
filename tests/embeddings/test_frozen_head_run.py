"""A frozen-backbone head through the ordinary commands: fit (embeddings cached, head fitted, checkpointed), the
checkpoint reloaded as its strategy (as test / predict / export do) with the same outputs, and ``bloodcls embed``
on the run (cache reuse, one-line error for a split the run does not have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from bloodcls.commands.embed import main as embed_main
from bloodcls.commands.export import load_classifier
from bloodcls.strategies.frozen_head import FrozenHead


def _fit(root: Path, fragment: str) -> Path:
    from bloodcls.cli import BloodCLI

    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / fragment)]
    args += ["--model.init_args.backbone", "bloodcls_cnn_tiny", "--data.init_args.image_size", "32"]
    args += ["--data.source.per_class", "16", "--data.init_args.labels_per_class", "6"]
    args += ["--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.enable_model_summary", "false", "--model.init_args.embedding_cache_dir", str(root / "cache")]
    BloodCLI(args=[*args, "--trainer.logger.init_args.save_dir", str(root / "runs")])
    best = root / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    return best


@pytest.mark.parametrize("fragment", ["configs/strategies/label_propagation_head.yaml"])
def test_frozen_head_fits_reloads_and_embeds(fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = _fit(tmp_path, fragment)
    model = load_classifier(best)
    assert isinstance(model, FrozenHead) and model.head_name == "label_propagation"
    subsets = [row.split(",")[-1] for row in (best.parent.parent / "split.csv").read_text().splitlines()[1:]]
    assert subsets.count("train") == 5 * 6  # the run's labeled budget, nothing more
    assert model.head.nodes.shape[0] == subsets.count("train") + subsets.count("unlabeled")  # the propagation graph
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    probs = model.eval_probabilities(images)
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(1), torch.ones(3))
    assert all(not p.requires_grad for p in model.net.parameters())
    # bloodcls embed on the run: the fit already cached the train and unlabeled rows with the same identity.
    embed_main(["--ckpt_path", str(best), "--cache_dir", str(tmp_path / "cache"), "--splits", "train", "unlabeled"])
    assert "(0 computed" in capsys.readouterr().out
    out = best.parent.parent / "embeddings"
    emb = np.load(out / "embeddings.npy", mmap_mode="r")
    assert emb.dtype == np.float16 and emb.shape == (model.head.nodes.shape[0], 32)
    assert (out / "rows.csv").read_text().splitlines()[0] == "file,hash,label,subset"
    with pytest.raises(SystemExit) as exc:
        embed_main(["--ckpt_path", str(best), "--splits", "excluded"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        embed_main(["--backbone", "bloodcls_cnn_tiny"])
    assert exc.value.code == 2 and "--config" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("fragment", ["configs/strategies/knn.yaml", "configs/strategies/mlp_head.yaml"])
def test_frozen_head_exports_to_onnx_with_parity(fragment: str, tmp_path: Path) -> None:
    from bloodcls.commands.export import main as export_main

    best = _fit(tmp_path, fragment)
    export_main(["--ckpt_path", str(best), "--format", "onnx", "--check"])  # exits 2 when parity fails
    assert (best.parent.parent / "export" / "best.onnx").is_file()


def test_embed_a_named_backbone_with_local_weights_over_a_config_s_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import timm
    import yaml

    torch.save(timm.create_model("bloodcls_cnn_tiny", num_classes=3).state_dict(), tmp_path / "w.pth")
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    config["data"]["init_args"]["source"]["init_args"]["per_class"] = 8
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    args = ["--backbone", "bloodcls_cnn_tiny", "--pretrained_weights", str(tmp_path / "w.pth"), "--image_size", "32"]
    args += ["--config", str(tmp_path / "fit.yaml"), "--cache_dir", str(tmp_path / "cache"), "--dtype", "float32"]
    embed_main([*args, "--output", str(tmp_path / "a"), "--splits", "val", "test"])
    assert "computed" in capsys.readouterr().out
    embed_main([*args, "--output", str(tmp_path / "b"), "--tta", "d4", "--splits", "val", "test"])
    plain, d4 = np.load(tmp_path / "a" / "embeddings.npy"), np.load(tmp_path / "b" / "embeddings.npy")
    assert plain.dtype == np.float32 and plain.shape == d4.shape and not np.allclose(plain, d4)  # TTA: its own key
    assert len(list((tmp_path / "cache").iterdir())) == 2
    with pytest.raises(SystemExit) as exc:  # no labels_per_class in this config: no unlabeled split
        embed_main([*args, "--output", str(tmp_path / "c"), "--splits", "unlabeled"])
    assert exc.value.code == 2 and "has no unlabeled split" in capsys.readouterr().err
