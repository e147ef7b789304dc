"""The parser behind every ``bloodcls`` trainer command: one-line errors, paths in a config relative to its file."""

from __future__ import annotations

import os
import re
from typing import Any, NoReturn

from jsonargparse import Namespace
from jsonargparse import Path as JsonargparsePath
from lightning.pytorch.cli import LightningArgumentParser

from bloodcls.commands.common import debug, fail, one_line
from bloodcls.config_paths import absolute_path_args, resolve_config_paths

# yaml's "in "<unicode string>", line 3, column 1" -- the file name it never knew
_YAML_WHERE = re.compile(r'in "<unicode string>", line (\d+), column (\d+)')


def config_error(path: str, message: str) -> str:
    """A YAML syntax error of the config file ``path`` as one line naming the file and the line."""
    where = _YAML_WHERE.findall(message)
    line = f":{where[-1][0]}" if where else ""
    reason = message.split("Problems parsing config:", 1)[-1]
    reason = " ".join(part.strip() for part in _YAML_WHERE.sub("", reason).splitlines() if part.strip())
    return f"{path}{line}: not a valid YAML config ({reason})"


def command_prog(prog: str) -> str:
    """``bloodcls fit`` whatever the interpreter called the script (``__main__.py fit``, ``pytest fit``)."""
    words = prog.replace(" [options]", "").split()
    return " ".join(["bloodcls", *words[1:]])


class BloodArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one ``bloodcls <command>: error: ...`` line (exit 2) instead of
    70-odd lines of usage, and whose ``--config`` files resolve their relative input paths (``config_paths``)
    against the file's own folder, so a config -- and a run's saved config.yaml -- works from any directory."""

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]  # jsonargparse's signature
        # Command-line paths are relative to the cwd: made absolute before a later --config could re-resolve them.
        given = args[0] if args else kwargs.get("args")
        if given is not None and not isinstance(given, str):
            fixed = absolute_path_args([str(a) for a in given], os.getcwd())
            args, kwargs = ((fixed, *args[1:]), kwargs) if args else (args, {**kwargs, "args": fixed})
        return super().parse_args(*args, **kwargs)

    def parse_path(
        self,
        path: str | os.PathLike[str],
        ext_vars: dict[str, Any] | None = None,
        env: bool | None = None,
        defaults: bool = True,
        **kwargs: Any,
    ) -> Namespace:
        shown = os.fspath(path)
        outer: str | None = getattr(self, "_config_file", None)
        self._config_file: str | None = shown  # named by error() in a YAML syntax error
        try:
            cfg = super().parse_path(path, ext_vars=ext_vars, env=env, defaults=defaults, **kwargs)
        finally:
            self._config_file = outer
        if "://" not in shown:
            # jsonargparse's Path finds the file as parse_path just did (relative to an enclosing config's folder)
            resolve_config_paths(cfg, os.path.dirname(JsonargparsePath(shown, mode="fr").absolute))
        return cfg

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        config_file = getattr(self, "_config_file", None)
        if config_file and "Problems parsing config" in message:
            message = config_error(config_file, message)
        if not self.exit_on_error or debug():
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        fail(command_prog(parser.prog), one_line(message))
