"""seedbatch: reproducible batches of AI image generation from a YAML manifest."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
