"""Errors caused by user input (configs, paths, datasets): the CLI prints them as one line, no traceback."""

from __future__ import annotations


class UserInputError(ValueError):
    """A config value, dataset or file the user supplied is not usable; the message names it and says why."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A path named in the config does not exist."""


class DiskFullError(UserInputError):
    """Writing an output file failed because the disk (or the user's quota) is full; the message names the file."""
