"""How numbers and values are shown to people (HTML, Markdown, the terminal)."""

from __future__ import annotations

import json
from typing import Any


def usd(value: float | None) -> str:
    """$1,234.50, or up to four decimals for fractions of a dollar ($0.0035)."""
    if value is None:
        return "—"
    if abs(value) >= 1 or value == 0:
        return f"${value:,.2f}"
    whole, _, frac = f"{value:.4f}".partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"${whole}.{frac}"


def credits(value: float | None) -> str:
    """6, 1,200, 2.5: credits without trailing zeros."""
    if value is None:
        return "—"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def size(n: int | None) -> str:
    """Bytes as B, KB, MB or GB."""
    if n is None:
        return "—"
    amount = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{n} B"


def duration(seconds: float | None) -> str:
    """4.2 s, 3 min 07 s, 1 h 05 min."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def value(v: Any) -> str:
    """A parameter or matrix value: strings as they are, anything else as JSON."""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)
