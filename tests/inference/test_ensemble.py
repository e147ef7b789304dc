"""Ensembles: averaging members' probabilities, refusing members of other classes or image sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bloodcls.errors import UserInputError
from bloodcls.inference import InferenceSettings
from bloodcls.inference.ensemble import Ensemble, check_compatible


class _Member(torch.nn.Module):
    """A stand-in classifier: fixed logits per member, with its own temperature."""

    def __init__(self, logits: list[float], temperature: float = 1.0) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.inference = InferenceSettings(temperature=temperature)

    def eval_probabilities(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return (self.logits.expand(len(images), -1) / self.inference.temperature).softmax(1)


def test_ensemble_is_the_mean_of_each_members_own_probabilities() -> None:
    a, b = _Member([2.0, 0.0, 0.0]), _Member([0.0, 3.0, 0.0], temperature=2.0)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    got = Ensemble([a, b])(images)
    expected = (torch.tensor([2.0, 0.0, 0.0]).softmax(0) + torch.tensor([0.0, 1.5, 0.0]).softmax(0)) / 2
    torch.testing.assert_close(got, expected.expand(4, -1))
    torch.testing.assert_close(Ensemble([a])(images), a.eval_probabilities(images))


def test_members_of_other_classes_or_sizes_are_refused_in_one_line() -> None:
    names = ["a", "b"]
    check_compatible(["x", "y"], [names, names], [32, 32])
    with pytest.raises(UserInputError, match="y has classes") as err:
        check_compatible(["x", "y"], [names, ["b", "a"]], [32, 32])  # same classes, other order: still refused
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="image_size 64"):
        check_compatible(["x", "y"], [names, names], [32, 64])
    check_compatible(["x", "y"], [names, names], [32, 32], [0.5, 0.5])
    with pytest.raises(UserInputError, match="y was trained on data.center_crop 1.0"):
        check_compatible(["x", "y"], [names, names], [32, 32], [0.5, 1.0])  # same size, other pixels per cell
    with pytest.raises(UserInputError, match="named twice"):
        check_compatible(["runs/a/best.ckpt", "runs/../runs/a/best.ckpt"], [names, names], [32, 32])
    with pytest.raises(UserInputError):
        Ensemble([])


def test_summarize_prints_the_fold_ensemble_command_only_for_kfold_folds(tmp_path: Path) -> None:
    from bloodcls.commands.summarize import RunIdentity, ensemble_note

    everything = frozenset("abcd")
    folds = [RunIdentity(f"f{i}", ("x", "y"), 2, frozenset(s), everything, 2) for i, s in enumerate(("ab", "cd"))]
    files = [tmp_path / f"f{i}" / "test" / "metrics.json" for i in range(2)]
    note = ensemble_note([tmp_path / "f0", tmp_path / "f1"], files, folds)
    assert note is not None
    assert f"--ckpt_path {tmp_path / 'f0' / 'checkpoints' / 'best.ckpt'} --ensemble" in note
    assert "no fold's test split can evaluate it" in note
    seeds = [RunIdentity(f"s{i}", ("x", "y"), 2, frozenset("ab"), everything, None) for i in range(2)]
    assert ensemble_note([tmp_path / "s0", tmp_path / "s1"], files, seeds) is None  # same test set: not folds


class _Oracle(torch.nn.Module):
    """A member that is sure of each image's true class, which the image carries in its first pixel."""

    def eval_probabilities(self, images: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.one_hot(images[:, 0, 0, 0].long(), 3).float()


def test_validate_scores_the_ensemble_so_it_can_be_chosen_on_validation() -> None:
    import lightning

    from bloodcls.strategies import Supervised

    torch.manual_seed(0)
    labels = torch.arange(12) % 3
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    batches = [
        {"image": images[i : i + 4], "label": labels[i : i + 4], "index": torch.arange(i, i + 4)} for i in (0, 4, 8)
    ]
    model = Supervised(num_classes=3, backbone="bloodcls_cnn_tiny")
    model.eval()
    with torch.no_grad():
        alone = (model(images).argmax(1) == labels).float().mean().item()
    assert alone < 1.0  # an untrained network: the oracles are what can make validation perfect

    def validate() -> float:
        trainer = lightning.Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are
        return float(trainer.validate(model, loader, verbose=False)[0]["val/acc"])

    assert validate() == pytest.approx(alone)
    model.ensemble_members = [_Oracle(), _Oracle()]  # type: ignore[list-item]  # what --ensemble sets
    assert validate() == pytest.approx(1.0)  # two sure members outvote any single network


def test_validate_overrides_apply_only_to_bloodcls_validate_and_are_removed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from types import SimpleNamespace

    import bloodcls.callbacks.inference_overrides as overrides
    from bloodcls.strategies import Supervised

    def tiny() -> Supervised:
        return Supervised(num_classes=3, backbone="bloodcls_cnn_tiny")

    monkeypatch.setattr(overrides, "load_member", lambda path, tta: tiny())
    monkeypatch.setattr(overrides, "run_dir", lambda trainer: tmp_path)
    callback = overrides.InferenceOverrides("a.ckpt", "d4", ["b.ckpt"])
    model = tiny()

    def trainer(fn: str) -> Any:
        return SimpleNamespace(state=SimpleNamespace(fn=fn), is_global_zero=True, callbacks=[])

    callback.on_validation_start(trainer("fit"), model)  # fit's validation loop: untouched
    assert model.ensemble_members == [] and model.inference.tta == "none"
    callback.on_validation_start(trainer("validate"), model)
    assert len(model.ensemble_members) == 1 and model.inference.tta == "d4"
    assert json.loads((tmp_path / "inference.json").read_text())["stage"] == "validate"
    callback.on_validation_end(trainer("validate"), model)
    assert model.ensemble_members == []
    model.validates_with_eval_probabilities = False  # type: ignore[misc]  # ContrastivePretrain's linear probe
    with pytest.raises(UserInputError, match="do not apply"):
        callback.on_validation_start(trainer("validate"), model)
