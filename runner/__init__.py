"""seedbatch: reproducible batches of AI image generation from a YAML manifest."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

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
