"""Demo Images' models as seedbatch sees them: parameter schemas (shipped beside this file),
limits, a cross-field rule and list prices. Pure data; nothing here talks to the network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.jobs import Price
from runner.spec import ModelSpec

NAME = "demo"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def request_pixels(spec: ModelSpec, params: Mapping[str, Any],
                   n_images: int) -> list[tuple[str, str]]:
    """One request renders at most ``x-seedbatch.max_request_pixels`` pixels in all:
    n × width × height (a rule JSON Schema cannot say)."""
    limit = _int(spec.limits.get("max_request_pixels"))
    width, height = _int(params.get("width")), _int(params.get("height"))
    n = _int(params.get("n", 1))
    if limit is None or width is None or height is None or n is None:
        return []
    pixels = n * width * height
    if pixels <= limit:
        return []
    return [("params.n", f"{spec.id}: n × width × height = {n}×{width}×{height} = "
                         f"{pixels:,} pixels; one request renders at most {limit:,} "
                         f"(lower n, or the size)")]


MODELS = (
    ModelSpec("demo/pattern-v1", NAME, "pattern-v1", "Demo Images pattern-v1 (pattern tiles)",
              SCHEMAS / "pattern-v1.json", Price(usd_per_image=0.002),
              "Demo Images price list", "n", rules=(request_pixels,)),
    ModelSpec("demo/pattern-hd-v1", NAME, "pattern-hd-v1",
              "Demo Images pattern-hd-v1 (large pattern tiles)",
              SCHEMAS / "pattern-hd-v1.json", Price(usd_per_image=0.008),
              "Demo Images price list", "n", rules=(request_pixels,)),
)
