"""The ``seedbatch`` command line: the only place errors become messages and exit codes.

Exit codes (a contract scripts rely on, defined in :mod:`runner.errors`): 0 success, 1 some
jobs failed (or verify found damage), 2 bad input, 3 fatal provider error (auth, balance),
130 interrupted.
"""

from __future__ import annotations

import functools
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


# Each command module registers its commands on `main` when imported.
from runner.cli import (  # noqa: E402
    emulate_cmd,
    manifest_cmds,
    report_cmds,
    review_cmds,
    run_cmds,
    store_cmds,
)

__all__ = ["emulate_cmd", "main", "manifest_cmds", "report_cmds", "review_cmds", "run_cmds",
           "store_cmds"]
