"""How amounts and values are shown to people: the terminal, report.html, Markdown.

Money, in the styles seedbatch prints it::

    usd(v)             $1,234.50 · $0.0035 · —    report.html, Markdown (cents from a dollar up)
    usd_precise(v)     $1.2345 · $0.03            `plan` and `models` tables (list prices)
    credits(v)         6 · 1,200 · 2.5 · —        report.html, Markdown
    credits_fixed(v)   6 · 1,200 · 2.50           `plan` and `models` tables
    spend(usd, cr)     $0.1234 + 6 credits        progress line, run and status summaries
"""

from __future__ import annotations

import json
from typing import Any


def usd_precise(value: float) -> str:
    """Up to four decimals, at least two: $1.2345, $0.03, $1,234.50."""
    whole, _, frac = f"{value:,.4f}".rstrip("0").partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def usd(value: float | None) -> str:
    """$1,234.50, or up to four decimals for fractions of a dollar ($0.0035)."""
    if value is None:
        return "—"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return usd_precise(value)


def credits(value: float | None) -> str:
    """6, 1,200, 2.5: credits without trailing zeros."""
    if value is None:
        return "—"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def credits_fixed(value: float) -> str:
    """6, 1,200, 2.50: whole credits bare, others to the hundredth."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def spend(usd: float, credits: float, *, approx: bool = False) -> str:
    """$0.1234, 6 credits, or $0.1234 + 6 credits; ``approx`` puts "≈ " first."""
    parts = []
    if usd or not credits:
        parts.append(f"${usd:.4f}")
    if credits:
        parts.append(f"{credits:g} credits")
    return ("≈ " if approx else "") + " + ".join(parts)


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
