"""Fault injection for the emulator: what can go wrong, how often, and the draw per request.

A spec is a comma-separated list of ``kind=rate`` pairs, rates between 0 and 1 per request::

    429=0.1,5xx=0.05,drop=0.02,slow=0.05,fail=0.1,truncate=0.05,slow_seconds=3

========== ===================================================================================
kind       effect
========== ===================================================================================
429        HTTP 429 with the provider's error envelope, sometimes with a ``Retry-After`` header
5xx        HTTP 500, 502 or 503; nothing is created
drop       the connection is dropped without an answer; on a submit, randomly before the task
           is created or *after* it (the "unknown outcome" case a client must not resubmit)
slow       the answer is delayed by ``slow_seconds`` (default 3)
fail       the task runs, then ends failed (Wiro: non-zero ``pexit``; Pixwith: status 3)
truncate   a file download stops short of its ``Content-Length``, then the connection closes
========== ===================================================================================

API calls can meet ``429``, ``5xx``, ``drop`` and ``slow``; file downloads ``5xx``, ``drop``,
``slow`` and ``truncate``; ``fail`` is drawn once per created task. Each kind is drawn
independently in the order of the table (``slow`` combines with any other), so with several
kinds set the later ones fire a little less often than their nominal rate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Literal

FaultKind = Literal["429", "5xx", "drop", "slow", "fail", "truncate"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "5xx", "drop", "slow", "fail", "truncate")

# spec key → dataclass field
_FIELD_OF = {
    "429": "http_429",
    "5xx": "http_5xx",
    "drop": "drop",
    "slow": "slow",
    "fail": "fail",
    "truncate": "truncate",
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """How often each fault happens (a probability per request, 0..1)."""

    http_429: float = 0.0
    http_5xx: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    fail: float = 0.0
    truncate: float = 0.0
    slow_seconds: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
                value
            ):
                raise ValueError(f"fault {f.name} must be a finite number, not {value!r}")
            if f.name == "slow_seconds":
                if value < 0:
                    raise ValueError(f"slow_seconds must be ≥ 0, not {value}")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {f.name} must be between 0 and 1, not {value}")

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        """Parse ``"429=0.1,5xx=0.05,…,slow_seconds=3"``; ``""`` or ``"none"`` means no faults."""
        if spec is None:
            return cls()
        text = spec.strip()
        if text.lower() in ("", "none", "off"):
            return cls()
        known = ", ".join((*FAULT_KINDS, "slow_seconds"))
        values: dict[str, float] = {}
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value_text = item.partition("=")
            name, value_text = name.strip(), value_text.strip()
            if not sep or not name or not value_text:
                raise ValueError(f"fault spec item {item!r} is not KIND=VALUE "
                                 f"(example: 429=0.1,drop=0.02,slow_seconds=3)")
            if name not in _FIELD_OF and name != "slow_seconds":
                raise ValueError(f"unknown fault kind {name!r} in {item!r}; known: {known}")
            if name in values:
                raise ValueError(f"fault kind {name!r} is given twice")
            try:
                value = float(value_text)
            except ValueError:
                raise ValueError(f"{name}: {value_text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{name}: {value_text!r} is not a finite number")
            if name == "slow_seconds":
                if value < 0:
                    raise ValueError(f"slow_seconds must be ≥ 0 (got {value_text})")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value_text}: a rate must be between 0 and 1 "
                                 f"(0.05 means 5% of requests)")
            values[name] = value
        kwargs = {(_FIELD_OF.get(k) or k): v for k, v in values.items()}
        return cls(**kwargs)

    def rate(self, kind: FaultKind) -> float:
        return float(getattr(self, _FIELD_OF[kind]))

    @property
    def active(self) -> bool:
        return any(self.rate(k) > 0 for k in FAULT_KINDS)

    def __str__(self) -> str:
        parts = [f"{k}={self.rate(k):g}" for k in FAULT_KINDS if self.rate(k) > 0]
        if not parts:
            return "none"
        if self.slow > 0:
            parts.append(f"slow_seconds={self.slow_seconds:g}")
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one request."""

    slow: bool = False
    error: Literal["429", "5xx", "drop", "truncate"] | None = None
    drop_after: bool = False  # drop only after the handler ran (a submit creates its task)
    status: int = 0  # the 5xx status
    retry_after: int | None = None  # seconds, for a 429 that carries Retry-After


NO_FAULT = Decision()


class FaultInjector:
    """Draws faults for requests from a (seedable) random generator."""

    def __init__(self, spec: FaultSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng

    def _hit(self, kind: FaultKind) -> bool:
        rate = self.spec.rate(kind)
        return rate > 0 and self.rng.random() < rate

    def for_api(self) -> Decision:
        slow = self._hit("slow")
        if self._hit("429"):
            retry = self.rng.choice((None, 1, 2))
            return Decision(slow=slow, error="429", retry_after=retry)
        if self._hit("5xx"):
            return Decision(slow=slow, error="5xx", status=self.rng.choice((500, 502, 503)))
        if self._hit("drop"):
            return Decision(slow=slow, error="drop", drop_after=self.rng.random() < 0.5)
        return Decision(slow=slow) if slow else NO_FAULT

    def for_download(self) -> Decision:
        slow = self._hit("slow")
        if self._hit("5xx"):
            return Decision(slow=slow, error="5xx", status=self.rng.choice((500, 502, 503)))
        if self._hit("drop"):
            return Decision(slow=slow, error="drop")
        if self._hit("truncate"):
            return Decision(slow=slow, error="truncate")
        return Decision(slow=slow) if slow else NO_FAULT

    def for_upload(self) -> Decision:
        """The presigned upload target: an object store answers 5xx, drops, or is slow."""
        slow = self._hit("slow")
        if self._hit("5xx"):
            return Decision(slow=slow, error="5xx", status=self.rng.choice((500, 503)))
        if self._hit("drop"):
            return Decision(slow=slow, error="drop", drop_after=self.rng.random() < 0.5)
        return Decision(slow=slow) if slow else NO_FAULT

    def task_fails(self) -> bool:
        return self._hit("fail")
