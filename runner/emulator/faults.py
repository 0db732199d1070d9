"""Fault injection for the emulator: what can go wrong, how often, and the draw per request.

A spec is a comma-separated list of ``kind=rate`` pairs, rates between 0 and 1 per request::

    429=0.1,5xx=0.05,drop=0.02,slow=0.05,task_error=0.05,fail=0.1,truncate=0.05,slow_seconds=3

========== ===================================================================================
kind       effect
========== ===================================================================================
429        HTTP 429 in the provider's error envelope (``EmulatorSpec.errors``), sometimes with
           a ``Retry-After`` header
5xx        HTTP 500 (the provider's envelope), 502 or 503 (a gateway's page); nothing is
           created
drop       the connection is dropped without an answer; on a submit, randomly before the task
           is created or *after* it (the "unknown outcome" case a client must not resubmit)
slow       the answer is delayed by ``slow_seconds`` (default 3)
task_error the task stops before its model runs, is never billed, and shows the host's own
           pre-execution failure; only hosts that have one (``EmulatorSpec.task_faults``)
fail       the task runs, then ends failed, in the host's own words
truncate   a file download stops short of its ``Content-Length``, then the connection closes
socket_    a push channel (websocket) connection is refused at the handshake (HTTP 403)
refuse
socket_    a push channel connection is dropped mid-stream, after its first frame
drop
socket_    a push channel connection accepts subscriptions and never sends a frame
silent
========== ===================================================================================

API calls can meet ``429``, ``5xx``, ``drop`` and ``slow``; file downloads ``5xx``, ``drop``,
``slow`` and ``truncate``; the presigned upload target ``5xx``, ``drop`` and ``slow``;
``task_error`` and ``fail`` are drawn once per created task, each only for hosts that know
it (``EmulatorSpec.task_faults``; the default is ``fail`` alone); the ``socket_`` kinds once
per push channel connection (hosts with an ``EmulatorSpec.push_path``). Within one decision ``slow``
combines with any other kind; of the others the first in the table's order that fires
wins, so with several kinds set the later ones fire a little less often than their nominal
rate.

**Prompt markers.** A prompt holding the word ``emulator:task_error`` or ``emulator:fail``
gives its task that fate whatever the draw, on a host that knows the fate (elsewhere the
prompt is an ordinary one). The task still takes its draw, so a marker never
changes which fault any other task meets.

**Draws are a function of the seed and a count, never of timing.** Each *stream* of
decisions — ``api`` (every API call), ``download``, ``upload`` (presigned targets),
``socket`` (push channel connections), and
``task/<provider>`` for each emulated provider (every created task) — has a random
generator of its own,
seeded from the emulator's ``seed`` and the stream's name, and every decision takes the same
amount of randomness from it whatever the spec and whatever fires. So the n-th API call of
a run meets the same fault in every run with that seed and spec, however a concurrent
client's calls interleave with its downloads and with task creations, and
:func:`expected_faults` tells, from the number of decisions per stream, exactly how many
faults of each kind a run met.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Literal, TypeVar

from runner.plugins import registry

FaultKind = Literal["429", "5xx", "drop", "slow", "task_error", "fail", "truncate",
                    "socket_refuse", "socket_drop", "socket_silent"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "5xx", "drop", "slow", "task_error", "fail",
                                      "truncate", "socket_refuse", "socket_drop",
                                      "socket_silent")
#: What may happen to one push channel connection.
SocketFault = Literal["socket_refuse", "socket_drop", "socket_silent"]
#: What a created task may be made to do instead of succeeding.
TaskFault = Literal["task_error", "fail"]
#: The decision streams every emulator has, each with its own seeded generator (see the
#: module's docstring); each emulated provider adds its own ``task/<provider>`` stream.
SHARED_STREAMS: tuple[str, ...] = ("api", "download", "upload", "socket")
#: The task fates a provider's emulator knows when it does not say (``EmulatorSpec``).
DEFAULT_TASK_FAULTS: tuple[TaskFault, ...] = ("fail",)
#: The keys of ``/__stats`` ``faults``: each kind, and the drops that came after the handler.
COUNTED: tuple[str, ...] = ("429", "5xx", "drop", "drop_after", "slow", "task_error", "fail",
                            "truncate", "socket_refuse", "socket_drop", "socket_silent")

# spec key → dataclass field
_FIELD_OF = {
    "429": "http_429",
    "5xx": "http_5xx",
    "drop": "drop",
    "slow": "slow",
    "task_error": "task_error",
    "fail": "fail",
    "truncate": "truncate",
    "socket_refuse": "socket_refuse",
    "socket_drop": "socket_drop",
    "socket_silent": "socket_silent",
}

# ``emulator:task_error`` / ``emulator:fail`` as a word of its own (not ``emulator:failure``)
_MARKER = re.compile(r"(?<![\w:])emulator:(task_error|fail)(?![\w:])")
MARKERS: dict[TaskFault, str] = {"task_error": "emulator:task_error", "fail": "emulator:fail"}


def task_stream(provider: str) -> str:
    """The decision stream of ``provider``'s created tasks."""
    return f"task/{provider}"


def streams(providers: Collection[str]) -> tuple[str, ...]:
    """Every decision stream of an emulator serving ``providers``."""
    return (*SHARED_STREAMS, *(task_stream(p) for p in providers))


def task_faults_of(provider: str) -> tuple[TaskFault, ...]:
    """The task fates installed provider ``provider``'s emulator knows."""
    spec = registry().providers.get(provider)
    if spec is None or spec.emulator is None:
        return DEFAULT_TASK_FAULTS
    return tuple(f for f in ("task_error", "fail") if f in spec.emulator.task_faults)


def marked_fault(prompt: str, kinds: Collection[str]) -> TaskFault | None:
    """The fate a prompt marker asks for a task of a host that knows the fates ``kinds``,
    if any (task_error first)."""
    found = set(_MARKER.findall(prompt))
    if "task_error" in found and "task_error" in kinds:
        return "task_error"
    if "fail" in found and "fail" in kinds:
        return "fail"
    return None


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """How often each fault happens (a probability per request, 0..1)."""

    http_429: float = 0.0
    http_5xx: float = 0.0
    drop: float = 0.0
    slow: float = 0.0
    task_error: float = 0.0
    fail: float = 0.0
    truncate: float = 0.0
    socket_refuse: float = 0.0
    socket_drop: float = 0.0
    socket_silent: float = 0.0
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

    def counted(self) -> list[str]:
        """The ``/__stats`` ``faults`` keys this decision adds one to."""
        keys = ["slow"] if self.slow else []
        if self.error is not None:
            keys.append(self.error)
        if self.drop_after:
            keys.append("drop_after")
        return keys


NO_FAULT = Decision()


_T = TypeVar("_T")


def _pick(options: tuple[_T, ...], u: float) -> _T:
    """One of ``options``, evenly, by a number in [0, 1)."""
    return options[min(int(u * len(options)), len(options) - 1)]


class FaultInjector:
    """Draws faults for requests and tasks: one seeded stream per kind of decision.

    ``seed=None`` seeds every stream from the system's randomness."""

    def __init__(self, spec: FaultSpec, seed: int | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self._streams: dict[str, random.Random] = {}
        self.decisions: Counter[str] = Counter()  # decisions made, per stream

    def with_spec(self, spec: FaultSpec) -> FaultInjector:
        """The same streams, carried on where they are, under another spec."""
        other = FaultInjector(spec, self.seed)
        other._streams = self._streams
        other.decisions = self.decisions
        return other

    def _numbers(self, stream: str, n: int) -> list[float]:
        rng = self._streams.get(stream)
        if rng is None:
            rng = random.Random(None if self.seed is None
                                else f"seedbatch-emulator/{self.seed}/{stream}")
            self._streams[stream] = rng
        self.decisions[stream] += 1
        return [rng.random() for _ in range(n)]

    def _hit(self, kind: FaultKind, u: float) -> bool:
        return u < self.spec.rate(kind)

    def for_api(self) -> Decision:
        u = self._numbers("api", 6)
        slow = self._hit("slow", u[0])
        if self._hit("429", u[1]):
            return Decision(slow=slow, error="429", retry_after=_pick((None, 1, 2), u[4]))
        if self._hit("5xx", u[2]):
            return Decision(slow=slow, error="5xx", status=_pick((500, 502, 503), u[4]))
        if self._hit("drop", u[3]):
            return Decision(slow=slow, error="drop", drop_after=u[5] < 0.5)
        return Decision(slow=slow) if slow else NO_FAULT

    def for_download(self) -> Decision:
        u = self._numbers("download", 5)
        slow = self._hit("slow", u[0])
        if self._hit("5xx", u[1]):
            return Decision(slow=slow, error="5xx", status=_pick((500, 502, 503), u[4]))
        if self._hit("drop", u[2]):
            return Decision(slow=slow, error="drop")
        if self._hit("truncate", u[3]):
            return Decision(slow=slow, error="truncate")
        return Decision(slow=slow) if slow else NO_FAULT

    def for_upload(self) -> Decision:
        """The presigned upload target: an object store answers 5xx, drops, or is slow."""
        u = self._numbers("upload", 5)
        slow = self._hit("slow", u[0])
        if self._hit("5xx", u[1]):
            return Decision(slow=slow, error="5xx", status=_pick((500, 503), u[3]))
        if self._hit("drop", u[2]):
            return Decision(slow=slow, error="drop", drop_after=u[4] < 0.5)
        return Decision(slow=slow) if slow else NO_FAULT

    def for_socket(self) -> SocketFault | None:
        """What happens to a new push channel connection, if anything."""
        u = self._numbers("socket", 3)
        if self._hit("socket_refuse", u[0]):
            return "socket_refuse"
        if self._hit("socket_drop", u[1]):
            return "socket_drop"
        if self._hit("socket_silent", u[2]):
            return "socket_silent"
        return None

    def for_task(self, provider: str, kinds: Collection[str] | None = None,
                 ) -> TaskFault | None:
        """What a newly created task of ``provider`` will do instead of succeeding, if
        anything, among the fates ``kinds`` its host knows (default: what the installed
        provider's ``EmulatorSpec.task_faults`` says)."""
        kinds = task_faults_of(provider) if kinds is None else kinds
        u = self._numbers(task_stream(provider), 2)
        if "task_error" in kinds and self._hit("task_error", u[0]):
            return "task_error"
        if "fail" in kinds and self._hit("fail", u[1]):
            return "fail"
        return None


def expected_faults(spec: FaultSpec | str, seed: int, decisions: Mapping[str, int],
                    task_faults: Mapping[str, Collection[str]] | None = None) -> Counter[str]:
    """The ``/__stats`` ``faults`` counts an emulator with ``spec`` and ``seed`` shows after
    ``decisions[stream]`` decisions of each stream (``/__stats`` ``fault_decisions``), no
    prompt marker used and no spec changed on the way. ``task_faults`` gives the fates each
    provider's host knows (default: the installed providers' ``EmulatorSpec.task_faults``).

    The counts only grow with the number of decisions, so the counts for a number of
    decisions a run cannot stay below are a floor for that run."""
    spec = FaultSpec.parse(spec) if isinstance(spec, str) else spec
    injector = FaultInjector(spec, seed)
    counts: Counter[str] = Counter({key: 0 for key in COUNTED})
    draw = {"api": injector.for_api, "download": injector.for_download,
            "upload": injector.for_upload}
    for stream, n in decisions.items():
        for _ in range(n):
            if stream in draw:
                counts.update(draw[stream]().counted())
            elif stream == "socket":
                socket_fault = injector.for_socket()
                if socket_fault is not None:
                    counts[socket_fault] += 1
            elif stream.startswith("task/"):
                provider = stream.split("/", 1)[1]
                kinds = None if task_faults is None else task_faults.get(
                    provider, DEFAULT_TASK_FAULTS)
                fate = injector.for_task(provider, kinds)
                if fate is not None:
                    counts[fate] += 1
            else:
                raise ValueError(f"unknown decision stream {stream!r}; known: "
                                 f"{', '.join(SHARED_STREAMS)}, task/<provider>")
    return counts
