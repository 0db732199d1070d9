"""A faithful, offline emulator of the Wiro and Pixwith image APIs.

It speaks the vendors' wire formats (auth, request bodies, response shapes, statuses,
errors), renders real PNG outputs showing the prompt, bills like the providers do, injects
faults on demand and counts everything at ``GET /__stats``. ``seedbatch emulate`` serves it;
``seedbatch run --emulate`` and the tests use :func:`serve_in_thread` or
:func:`create_app` with ``httpx.ASGITransport``.
"""

from __future__ import annotations

from runner.emulator.app import create_app
from runner.emulator.config import EmulatorConfig
from runner.emulator.faults import FaultSpec
from runner.emulator.server import EmulatorServer, serve_in_thread

__all__ = ["EmulatorConfig", "EmulatorServer", "FaultSpec", "create_app", "serve_in_thread"]
