"""A faithful, offline emulator of the image APIs of every installed provider that ships one.

Each provider's emulator (its ``EmulatorSpec``: routes, account, error envelope) speaks its
host's wire format (auth, request bodies, response shapes, statuses, errors); the shared
core renders real PNG outputs showing the prompt, bills through each provider's account,
injects faults on demand and counts everything at ``GET /__stats``. ``seedbatch emulate``
serves it; ``seedbatch run --emulate`` and the tests use :func:`serve_in_thread` or
:func:`create_app` with ``httpx.ASGITransport``.
"""

from __future__ import annotations

from runner.emulator.app import Kit, create_app
from runner.emulator.config import EmulatorConfig
from runner.emulator.faults import FaultSpec
from runner.emulator.server import EmulatorServer, serve_in_thread
from runner.emulator.state import EmulatorState, ProviderContext, ProviderState, Task

__all__ = ["EmulatorConfig", "EmulatorServer", "EmulatorState", "FaultSpec", "Kit",
           "ProviderContext", "ProviderState", "Task", "create_app", "serve_in_thread"]
