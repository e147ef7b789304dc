"""The sweep file's search-space language: ``uniform(a, b)``, ``loguniform(a, b)``, ``randint(a, b)``, ``choice([..])``.

Parsed without ``eval``: the text is read as a Python expression tree and only a call of a known distribution
with literal arguments is accepted. Pure functions, no Ray import: ``to_ray_domain`` converts at the last moment.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from bloodcls.errors import UserInputError

DistKind = Literal["uniform", "loguniform", "randint", "choice"]
DISTRIBUTIONS: tuple[DistKind, ...] = ("uniform", "loguniform", "randint", "choice")
_CALL = re.compile(r"^\s*[A-Za-z_]\w*\s*\(.*\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Distribution:
    """One searched parameter. ``uniform`` / ``loguniform``: floats in [low, high]; ``randint``: integers
    low <= x < high (as in Ray Tune and NumPy); ``choice``: one of ``options``."""

    kind: DistKind
    low: float = 0.0
    high: float = 0.0
    options: tuple[Any, ...] = ()

    @property
    def numeric(self) -> bool:
        """Whether the values are numbers (so a plot can put them on a numeric axis)."""
        if self.kind != "choice":
            return True
        return all(_is_number(o) for o in self.options)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this distribution can produce."""
        if self.kind == "choice":
            return any(value == o and isinstance(value, bool) == isinstance(o, bool) for o in self.options)
        if not _is_number(value):
            return False
        if self.kind == "randint":
            return isinstance(value, int) and self.low <= value < self.high
        return self.low <= value <= self.high


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_distribution_text(value: Any) -> bool:
    """Whether a space value is meant as a distribution call (``name(...)``) rather than a plain value."""
    return isinstance(value, str) and bool(_CALL.match(value))


def parse_distribution(text: str) -> Distribution:
    """``"uniform(0.7, 0.99)"`` -> ``Distribution("uniform", 0.7, 0.99)``; raises ValueError with a short reason."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"'{text}' is not a distribution call like uniform(0.7, 0.99)") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError(f"'{text}' is not a distribution call like uniform(0.7, 0.99)")
    name = call.func.id
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution '{name}' (expected one of: {', '.join(DISTRIBUTIONS)})")
    if call.keywords:
        raise ValueError(f"{name}(...) takes positional arguments only")
    try:
        args = [ast.literal_eval(arg) for arg in call.args]  # literals only: numbers, strings, lists, True/None
    except ValueError:
        raise ValueError(f"'{text}': arguments must be literal values (numbers, strings, lists)") from None
    if name == "choice":
        return _choice(args)
    return _range(name, args)  # type: ignore[arg-type]


def _choice(args: list[Any]) -> Distribution:
    if len(args) != 1 or not isinstance(args[0], list | tuple) or not args[0]:
        raise ValueError("choice takes one non-empty list, e.g. choice([10, 20, 50])")
    return Distribution("choice", options=tuple(args[0]))


def _range(name: DistKind, args: list[Any]) -> Distribution:
    if len(args) != 2 or not all(_is_number(a) for a in args):
        raise ValueError(f"{name} takes two numbers, e.g. {name}(1, 10)")
    low, high = args
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{name}({low}, {high}): the lower bound must be below the upper bound")
    if name == "loguniform" and low <= 0:
        raise ValueError(f"loguniform({low}, {high}): bounds must be positive")
    if name == "randint" and not all(isinstance(a, int) for a in args):
        raise ValueError(f"randint({low}, {high}): bounds must be integers")
    return Distribution(name, low=low, high=high)


def parse_space(space: Any, where: str) -> tuple[dict[str, Distribution], dict[str, Any]]:
    """Split a sweep file's ``space`` mapping into searched parameters and fixed (plain) values, order kept.

    ``where`` names the file for error messages.
    """
    if not isinstance(space, dict) or not space:
        raise UserInputError(f"{where}: 'space' must be a non-empty mapping of config keys to distributions")
    searched: dict[str, Distribution] = {}
    fixed: dict[str, Any] = {}
    for key, value in space.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", key):
            raise UserInputError(f"{where}: space key {key!r} is not a dotted config key like model.init_args.lr")
        if not is_distribution_text(value):
            fixed[key] = value
            continue
        try:
            searched[key] = parse_distribution(value)
        except ValueError as err:
            raise UserInputError(f"{where}: space.{key}: {err}") from None
    if not searched:
        raise UserInputError(f"{where}: 'space' has no searched parameter (uniform, loguniform, randint, choice)")
    return searched, fixed


def probe_values(dist: Distribution) -> list[Any]:
    """Values to check against the config parser before launching: the bounds, or every option."""
    if dist.kind == "choice":
        return list(dist.options)
    if dist.kind == "randint":
        return [int(dist.low), int(dist.high) - 1]
    return [dist.low, dist.high]


def to_ray_domain(dist: Distribution, grid: bool = False) -> Any:
    """The Ray Tune search domain for ``dist`` (imports Ray); ``grid``: every option of a ``choice``, in turn."""
    from ray import tune

    if grid:
        return tune.grid_search(list(dist.options))
    if dist.kind == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.kind == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.kind == "randint":
        return tune.randint(int(dist.low), int(dist.high))
    return tune.choice(list(dist.options))
