"""What every ``bloodcls`` command shares: one-line user errors (exit 2), ``BLOODCLS_DEBUG``, the parse-only CLI."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from bloodcls.errors import UserInputError

if TYPE_CHECKING:
    from bloodcls.cli import BloodCLI

DEBUG_ENV = "BLOODCLS_DEBUG"  # set (to anything) to see the traceback behind a one-line error
MAX_ERROR_CHARS = 300
# Lines of jsonargparse's nested (union) error messages that say nothing the user can act on.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value: NestedArg(",
    "Expected a <class 'NoneType'>",
)


def debug() -> bool:
    """Whether the user asked for tracebacks instead of one-line errors."""
    return bool(os.environ.get(DEBUG_ENV))


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with ``code`` (2: bad input)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one ``<prog>: error:`` line (no usage block), like every other bloodcls error."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


@contextlib.contextmanager
def one_line_argparse_errors() -> Iterator[None]:
    """Tools built on plain ``argparse.ArgumentParser`` print their usage block before an error; while a tool runs,
    every argparse parser errs as ``OneLineParser`` does (jsonargparse's parsers override ``error`` themselves)."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = OneLineParser.error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def find_user_error(err: BaseException) -> UserInputError | None:
    """The UserInputError behind ``err``, also when jsonargparse re-raised it while instantiating a class."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserInputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(message: str) -> str:
    """jsonargparse's multi-line (union) error as one line that keeps the actionable parts, at most
    ``MAX_ERROR_CHARS`` long (it quotes a bad value whole, e.g. a non-YAML file given as ``--config``)."""
    lines = [line.strip().removeprefix("- ").strip() for line in str(message).splitlines()]
    text = " ".join(line for line in lines if line and not any(noise in line for noise in _NOISE))
    text = text or str(message).strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Bad configs, paths and datasets are the user's to fix: one ``<prog>: error:`` line and exit 2 instead of a
    traceback (a UserInputError anywhere in the chain, or a jsonargparse parse error). ``BLOODCLS_DEBUG=1`` shows
    the traceback when the message is not enough; anything else is a bug and keeps its traceback."""
    try:
        yield
    except Exception as err:
        if debug():
            raise
        from bloodcls.io import disk_full_error  # here: --help must not pay for imports

        user_error = disk_full_error(err) or find_user_error(err)  # a full disk while Lightning saves, too
        if user_error is not None:
            fail(prog, str(user_error))
        if isinstance(err, ArgumentError):
            fail(prog, one_line(str(err)))
        raise


def quiet_third_party_noise() -> None:
    """Hide warnings users cannot act on (library deprecations inside Lightning, advertising tips)."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Evaluating a checkpoint restores its ModelCheckpoint state too; the moved-dirpath notice is irrelevant there.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    if "SLURM_JOB_ID" not in os.environ:
        # Outside an allocation, "srun is available but not used" is noise on any machine with Slurm installed;
        # inside one it is a real hint (a job step started without srun), so it stays there.
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: (
            "litlogger" not in record.getMessage()
            # bloodcls brings its own (compact) model summary; Lightning says so on every run
            and "Skipping setting a default `ModelSummary`" not in record.getMessage()
        )
    )


@contextlib.contextmanager
def _quiet_parse() -> Iterator[None]:
    """LightningCLI seeds everything when it parses and logs it; parsing a config here trains nothing."""
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    level, saved_argv = logger.level, sys.argv
    logger.setLevel(logging.WARNING)
    # LightningCLI warns when it is given args while sys.argv also has some (the `bloodcls <tool> ...` line).
    sys.argv = saved_argv[:1] or ["bloodcls"]
    try:
        yield
    finally:
        logger.setLevel(level)
        sys.argv = saved_argv


def parse_fit_config(args: list[str], prog: str = "bloodcls fit") -> BloodCLI:
    """``bloodcls fit <args>`` parsed and validated by fit's own parser, nothing built (``cli.config`` holds it).

    Parse errors raise ``UserInputError`` with jsonargparse's message as one line.
    """
    from bloodcls.cli import BloodCLI  # imported here: bloodcls.cli dispatches the tool commands to this package

    class ParseOnlyCLI(BloodCLI):
        def init_parser(self, **kwargs: Any) -> Any:
            kwargs["exit_on_error"] = False  # parse errors raise, and become one line
            kwargs["prog"] = prog
            return super().init_parser(**kwargs)

        def instantiate_classes(self) -> None:
            """Nothing is built: the caller needs the validated configuration only."""

    try:
        with _quiet_parse():
            return ParseOnlyCLI(args=args, run=False)
    except ArgumentError as err:
        raise UserInputError(one_line(str(err))) from None
