"""Augmentation presets and YAML-specified pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from bloodcls.data.transforms import apply_transform, build_transform


@pytest.mark.parametrize("name", ["eval", "weak", "strong", "randaugment"])
def test_presets_keep_uint8_and_size(name: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = apply_transform(build_transform(name, 40), image)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8


def test_eval_is_identity_and_weak_changes_images() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_transform(build_transform("eval", 32), image), image)
    weak = build_transform("weak", 32)
    assert any(not np.array_equal(apply_transform(weak, image), image) for _ in range(10))


def test_yaml_list_with_presets_and_albumentations_names() -> None:
    pipeline = build_transform(
        ["weak", {"name": "GaussNoise", "p": 1.0}, {"name": "RandomResizedCrop", "size": [24, 24]}], 32
    )
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names[:3] == ["HorizontalFlip", "VerticalFlip", "RandomRotate90"]
    assert "GaussNoise" in names and names[-1] == "Resize"
    out = apply_transform(pipeline, np.zeros((32, 32, 3), np.uint8))
    assert out.shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fancy", "unknown transform preset 'fancy'"),
        ([{"name": "NoSuchTransform"}], "not an albumentations"),
        ([{"p": 0.5}], "'name' key"),
        ([{"name": "HorizontalFlip", "bogus": 1}], "HorizontalFlip"),
    ],
)
def test_bad_specs_have_clear_errors(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_transform(spec, 32)  # type: ignore[arg-type]


def test_randaugment_preset_is_random_n_of_m_ops_then_cutout() -> None:
    pipeline = build_transform("randaugment", 32)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert "SomeOf" in names and names[-2:] == ["CoarseDropout", "Resize"]
    some_of = pipeline.transforms[names.index("SomeOf")]
    assert some_of.n == 2 and len(some_of.transforms) >= 10  # RandAugment: N = 2 of 14 ops
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    outs = [apply_transform(pipeline, image) for _ in range(8)]
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 1
