"""Files shipped with seedbatch: the JSON Schemas.

In a wheel the schemas live inside the package (``runner/_schemas``); in a source checkout
or an editable install they are read from the repository's ``schemas/`` folder.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def schema_dir() -> Path:
    for candidate in (_PACKAGE / "_schemas", _PACKAGE.parent / "schemas"):
        if (candidate / "manifest.schema.json").is_file() or (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError("seedbatch's JSON Schemas are missing from this installation")


@cache
def load_schema(relative: str) -> dict[str, Any]:
    """Load a schema by its path under ``schemas/`` (e.g. ``models/<provider>-<model>.json``)."""
    with (schema_dir() / relative).open(encoding="utf-8") as fh:
        return json.load(fh)
