"""seedbatch: reproducible batches of AI image generation from a YAML manifest.

The package's public face (``runner.run``, ``runner.load_plan``, …): it sits above every
other module (docs/architecture.md, "Layers"), so no module inside imports from it; the
version is :mod:`runner.version`.
"""

from __future__ import annotations

from typing import Any

from runner.version import __version__

__all__ = ["__version__", "load_manifest", "load_plan", "resume", "run"]


def __getattr__(name: str) -> Any:
    # imported on first use, so `seedbatch --version` stays fast
    if name in ("load_manifest", "load_plan"):
        from runner import manifest

        return getattr(manifest, name)
    if name in ("run", "resume"):
        from runner import api

        return getattr(api, name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
