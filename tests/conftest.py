"""The whole suite: seedbatch's own providers only, whatever else is installed.

A provider plugin installed in the same environment (examples/plugins/seedbatch-demo, in a
developer's venv) would otherwise join the registry — its models in ``seedbatch models``,
its routes in the emulator, its credentials among those masked. ``SEEDBATCH_PLUGINS`` loads
only the entry points it names; ``runner.plugins.registry()`` caches one registry per value
of it and reads it on every call, and subprocesses inherit it, so setting it here, before
any test module loads, holds for the whole run. A value already set wins (to run the suite
with other providers on purpose).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points

from runner.plugins import GROUP, PLUGINS_VAR

#: seedbatch's own hosts: the entry points that point into ``runner.hosts``.
BUILTINS = sorted(ep.name for ep in entry_points(group=GROUP)
                  if ep.value.startswith("runner.hosts."))
os.environ.setdefault(PLUGINS_VAR, ",".join(BUILTINS))

# tests/cli_support.py (helpers for the suites that run seedbatch as a process)
_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
