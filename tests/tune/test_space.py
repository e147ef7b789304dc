"""The sweep space language: hand-written expectations for every distribution and every refusal."""

from __future__ import annotations

import pytest

from bloodcls.errors import UserInputError
from bloodcls.tuning.space import (
    Distribution,
    is_distribution_text,
    parse_distribution,
    parse_space,
    probe_values,
    to_ray_domain,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uniform(0.7, 0.99)", Distribution("uniform", 0.7, 0.99)),
        ("  uniform( -1 , 2.5 ) ", Distribution("uniform", -1, 2.5)),
        ("loguniform(1e-4, 1e-2)", Distribution("loguniform", 1e-4, 1e-2)),
        ("randint(1, 5)", Distribution("randint", 1, 5)),
        ("choice([10, 20, 50, 100])", Distribution("choice", options=(10, 20, 50, 100))),
        ("choice(['model', 'lp', 'both'])", Distribution("choice", options=("model", "lp", "both"))),
        ("choice([True, 0.5])", Distribution("choice", options=(True, 0.5))),
        ("choice([None, [0.9, 0.999]])", Distribution("choice", options=(None, [0.9, 0.999]))),
    ],
)
def test_parse_distribution(text: str, expected: Distribution) -> None:
    assert parse_distribution(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normal(0, 1)", "unknown distribution 'normal' (expected one of: uniform, loguniform, randint, choice)"),
        ("uniform(0.9, 0.7)", "lower bound must be below the upper bound"),
        ("uniform(0.5, 0.5)", "lower bound must be below the upper bound"),
        ("uniform(0.5)", "uniform takes two numbers"),
        ("uniform('a', 1)", "uniform takes two numbers"),
        ("loguniform(0, 1)", "bounds must be positive"),
        ("randint(1.5, 4)", "bounds must be integers"),
        ("choice([])", "choice takes one non-empty list"),
        ("choice(1, 2)", "choice takes one non-empty list"),
        ("uniform(low=0, high=1)", "positional arguments only"),
        ("uniform(__import__('os').getpid(), 1)", "arguments must be literal values"),
        ("os.system('ls')", "is not a distribution call"),
        ("uniform(0.7, 0.99", "is not a distribution call"),
    ],
)
def test_bad_distributions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_distribution(text)
    assert message in str(err.value)


def test_distribution_text_versus_plain_values() -> None:
    assert is_distribution_text("uniform(0, 1)") and is_distribution_text("foo(1)")
    for plain in (0.5, 10, "weak", "bloodcls.strategies.PseudoLabel", None, [1, 2], True):
        assert not is_distribution_text(plain)


def test_parse_space_splits_searched_and_fixed_keeping_order() -> None:
    searched, fixed = parse_space(
        {
            "model.init_args.entropy_threshold": "uniform(0.1, 1.0)",
            "trainer.max_epochs": 3,
            "model.init_args.confidence_threshold": "uniform(0.7, 0.99)",
            "data.init_args.train_transform": "strong",
        },
        "sweep.yaml",
    )
    assert list(searched) == ["model.init_args.entropy_threshold", "model.init_args.confidence_threshold"]
    assert fixed == {"trainer.max_epochs": 3, "data.init_args.train_transform": "strong"}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "'space' must be a non-empty mapping"),
        (None, "'space' must be a non-empty mapping"),
        ({"trainer.max_epochs": 3}, "'space' has no searched parameter"),
        ({"lr": "uniform(0, 1)"}, "space key 'lr' is not a dotted config key"),
        ({"model.init_args.lr": "gauss(0, 1)"}, "sweep.yaml: space.model.init_args.lr: unknown distribution 'gauss'"),
    ],
)
def test_parse_space_errors_name_the_file_and_key(space: object, message: str) -> None:
    with pytest.raises(UserInputError) as err:
        parse_space(space, "sweep.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_contains_and_probe_values() -> None:
    uniform = Distribution("uniform", 0.7, 0.99)
    assert uniform.contains(0.7) and uniform.contains(0.99) and not uniform.contains(0.5) and not uniform.contains("a")
    randint = Distribution("randint", 1, 5)
    assert randint.contains(4) and not randint.contains(5) and not randint.contains(2.5)
    assert probe_values(randint) == [1, 4] and probe_values(uniform) == [0.7, 0.99]
    choice = Distribution("choice", options=(10, 20))
    assert choice.contains(20) and not choice.contains(30) and not Distribution("choice", options=(1,)).contains(True)
    assert probe_values(choice) == [10, 20]
    assert choice.numeric and not Distribution("choice", options=("a", 1)).numeric


def test_ray_domains_sample_inside_the_declared_ranges() -> None:
    pytest.importorskip("ray.tune", reason="ray[tune] is the 'tune' extra")
    for dist in (
        Distribution("uniform", 0.7, 0.99),
        Distribution("loguniform", 1e-4, 1e-2),
        Distribution("randint", 1, 5),
        Distribution("choice", options=(10, 20, 50)),
    ):
        domain = to_ray_domain(dist)
        samples = [domain.sample() for _ in range(50)]  # one at a time, as Ray samples a trial's config
        assert all(dist.contains(s) for s in samples), (dist, samples)
    assert to_ray_domain(Distribution("choice", options=(10, 20)), grid=True) == {"grid_search": [10, 20]}
