"""The ``seedbatch`` command line: the only place errors become messages and exit codes.

Exit codes (a contract scripts rely on, defined in :mod:`runner.errors`): 0 success, 1 some
jobs failed (or verify found damage), 2 bad input, 3 fatal provider error (auth, balance),
130 interrupted.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from runner.errors import EXIT_INTERRUPTED, ManifestErrors, SeedbatchError
from runner.version import __version__

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


_reported: set[str] = set()


def _plugin_problems() -> None:
    """A plugin that failed to load is named on stderr, once; the command goes on. The
    registry keeps its problems (``seedbatch plugins --json`` lists them)."""
    from runner.plugins import registry

    for problem in registry().problems:
        if problem not in _reported:
            _reported.add(problem)
            click.echo(f"warning: {problem}", err=True)


def handles_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn seedbatch's errors into one clear message and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _plugin_problems()
        try:
            return func(*args, **kwargs)
        except ManifestErrors as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            n = len(exc.problems)
            click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
            sys.exit(exc.exit_code)
        except SeedbatchError as exc:
            fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)

    return wrapper


# Command name → the module of runner.cli that registers it on `main` when imported. A command
# loads only its own module (and what that imports): `seedbatch plan` never imports the
# executor, the emulator or the report. tests/test_project.py checks this table is complete.
COMMANDS = {
    "validate": "manifest_cmds", "plan": "manifest_cmds", "models": "manifest_cmds",
    "plugins": "manifest_cmds", "schema": "manifest_cmds",
    "run": "run_cmds", "resume": "run_cmds", "status": "run_cmds", "cancel": "run_cmds",
    "report": "report_cmds", "verify": "report_cmds",
    "pick": "review_cmds", "picks": "review_cmds", "export": "review_cmds",
    "view": "review_cmds",
    "push": "store_cmds", "pull": "store_cmds",
    "emulate": "emulate_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands' modules are imported when a command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"runner.cli.{module}")
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="seedbatch")
def main() -> None:
    """seedbatch — reproducible batches of AI image generation from a YAML manifest.

    \b
    A typical session:
      seedbatch validate manifests/quickstart.yaml     # every problem, located
      seedbatch plan manifests/quickstart.yaml         # jobs, cache, estimated cost
      seedbatch run manifests/quickstart.yaml --emulate --yes   # offline, free
      seedbatch verify runs/<run>                      # re-hash every output

    Credentials come from the environment only, in each provider's own variables
    (`seedbatch plugins` lists them). Exit codes: 0 ok, 1 some jobs failed, 2 bad input,
    3 fatal provider error (auth, balance), 130 interrupted.
    """


__all__ = ["COMMANDS", "fail", "handles_errors", "main"]
