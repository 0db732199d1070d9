"""seedbatch's built-in hosts, each one :class:`~runner.spec.ProviderSpec` registered through
the entry-point group ``seedbatch.providers`` exactly like an installed plugin (see
``pyproject.toml`` and docs/plugins.md). Each module ties a host's models, settings, client
(``runner/providers/<name>.py``) and emulator (``runner/emulator/<name>.py``) together; the
client and emulator are imported only when first used."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


def emulator_parts(load: Callable[[], ModuleType]) -> dict[str, Any]:
    """An ``EmulatorSpec``'s ``routes``, ``make_state`` and ``errors`` from the host's emulator
    module, imported by ``load`` on first use: its ``routes(kit)``, ``make_state(context)`` and
    ``error_response(status, message, headers)``."""
    return {"routes": lambda kit: load().routes(kit),
            "make_state": lambda context: load().make_state(context),
            "errors": lambda status, message, headers: load().error_response(
                status, message, headers)}
