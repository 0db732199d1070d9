"""Per-provider limits: tasks in flight (adaptive) and requests per minute.

* :class:`AdaptiveSlots` caps the tasks a provider has in flight. Its *target* starts at the
  configured cap and moves between 1 and the cap (additive increase, multiplicative
  decrease), by this rule:

  - **One halving per burst.** A rejection for being over a limit (a 429, or a host's
    "too many concurrent tasks" code) that arrives after the cool-down window is a *signal*: the
    target is halved (a concurrency rejection never takes it below the tasks running right
    now: they fit) and a window of one cool-down opens. Rejections inside the window are the
    same burst — answers to requests that were already on the wire when the first came back,
    sent under the same over-commitment — so they neither halve again nor restart or lengthen
    the cool-down. All a concurrency rejection inside the window can do is let the target
    follow the tasks that run down to the halved value of this burst, never below it (the
    tasks running at the first rejection included submits that were then refused). So a
    burst, however many rejections it holds, lowers the target by one halving at most.
  - **Escalation only for a limit that is still there.** A signal within one cool-down after
    the previous window closed means the provider refused again right after we backed off
    and started to raise the target: a hard limit, or a storm that outlasts the window. It
    doubles the cool-down (at most ``max_cooldown``), so probing a hard limit costs one burst
    per cool-down. A later signal starts over at the base cool-down. A single burst never
    lengthens it.
  - **Recovery.** Once the window has closed, every successful submit raises the target by
    one, up to the cap.
* :class:`RequestGate` spaces every call to a provider (submit, poll, cancel alike) with
  ``aiolimiter``, sized so that *any* 60-second window holds at most ``requests_per_minute``
  calls, and can be paused for everyone: the executor pauses it on every 429 (submit or
  poll) for the answer's ``Retry-After``, or 1 s without one. ``Retry-After`` is not
  :class:`AdaptiveSlots`' business: the slots decide how many tasks may be in flight, the
  gate when the next call may leave (a rejected submit also waits ``Retry-After`` itself
  before its next attempt, see ``runner.execute.policy.SubmitRetry``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from runner.jobs import Limits

DEFAULT_CONCURRENCY = 4
DEFAULT_REQUESTS_PER_MINUTE = 600.0


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    concurrency: int
    requests_per_minute: float | None  # None: no request-rate cap


def effective_limits(configured: Limits | None, concurrency_flag: int | None,
                     defaults: Limits | None = None) -> EffectiveLimits:
    """The manifest's limits for a provider combined with ``--concurrency``.

    ``--concurrency`` caps what the manifest allows (the lower wins); with no manifest value
    it sets the cap. Unset values fall back to the provider's ``defaults`` (its
    ``ProviderSpec.default_limits``), then to conservative ones."""
    conc = configured.concurrency if configured and configured.concurrency else None
    if concurrency_flag is not None:
        conc = min(conc, concurrency_flag) if conc else concurrency_flag
    if conc is None and defaults is not None and defaults.concurrency:
        conc = defaults.concurrency
    rpm = configured.requests_per_minute if configured else None
    if not rpm and defaults is not None:
        rpm = defaults.requests_per_minute
    return EffectiveLimits(max(1, int(conc or DEFAULT_CONCURRENCY)),
                           float(rpm) if rpm else DEFAULT_REQUESTS_PER_MINUTE)


class AdaptiveSlots:
    """A semaphore whose capacity (the *target*) moves between 1 and ``limit`` (AIMD).

    See the module docstring for the rule. Waiters are served first come, first served.
    ``peak`` records the most slots ever held at once, so tests can measure that the cap was
    never exceeded; ``rejections`` counts every rejection reported, ``lowered`` the signals
    among them (each halved the target, unless it was already at its floor, and opened a
    cool-down window)."""

    def __init__(self, limit: int, *, cooldown: float = 5.0, max_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("limit must be ≥ 1")
        self.limit = limit
        self.target = limit
        self.in_use = 0
        self.peak = 0
        self.lowered = 0  # signals acted on: cool-down windows opened
        self.rejections = 0  # every on_limited() call, inside a window or not
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.cooldown = cooldown
        self._clock = clock
        self._cool_until = -math.inf  # the current window closes here; raises resume then
        self._burst_floor = 1  # the halved target of the current burst
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return (f"AdaptiveSlots(in_use={self.in_use}, target={self.target}, "
                f"limit={self.limit}, waiting={len(self._waiters)})")

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def _take(self) -> None:
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    async def acquire(self) -> None:
        if self.in_use < self.target and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                with suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def take_now(self) -> None:
        """Take a slot without waiting, even over the target (a task already in flight)."""
        self._take()

    def release(self) -> None:
        if self.in_use <= 0:
            raise RuntimeError("release() without acquire()")
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.target:
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    def on_limited(self, *, concurrency: bool) -> None:
        """The provider refused a call for being over its limit (see the module docstring).

        After the window: a new signal — halve the target (a concurrency rejection: never
        below the tasks running right now), open a new window of one cool-down, doubled if
        this signal came within one cool-down after the last window closed. Inside the
        window: the same burst — no further halving, the window stays as it is."""
        now = self._clock()
        self.rejections += 1
        if now < self._cool_until:
            # Same burst. Only the floor of a concurrency rejection may have come down (the
            # refused submits counted among the tasks running at the first rejection).
            floor = max(self._burst_floor, self.in_use) if concurrency else self._burst_floor
            self.target = max(1, min(self.target, floor))
            return
        self._burst_floor = max(1, self.target // 2)
        floor = max(self._burst_floor, self.in_use) if concurrency else self._burst_floor
        self.target = max(1, min(floor, self.target, self.limit))
        if now < self._cool_until + self.cooldown:  # refused again soon after backing off
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
        else:
            self.cooldown = self.base_cooldown
        self._cool_until = now + self.cooldown
        self.lowered += 1

    def on_success(self) -> None:
        """A call went through: after the cool-down, raise the target by one (up to the cap)."""
        if self.target < self.limit and self._clock() >= self._cool_until:
            self.target += 1
            self._wake()


class RequestGate:
    """Every call to one provider passes here: an optional pause, then the rate limiter.

    ``aiolimiter`` is a leaky bucket: a burst of ``b`` calls, then a steady rate. With
    ``b = max(1, ⌊R/60⌋)`` and a steady rate of ``R − b`` per minute, any 60-second window
    holds at most ``b + (R − b) = R`` calls."""

    def __init__(self, requests_per_minute: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.requests_per_minute = requests_per_minute
        self._limiter: AsyncLimiter | None = None
        if requests_per_minute:
            rpm = float(requests_per_minute)
            burst = max(1, math.floor(rpm / 60))
            steady = max(rpm - burst, rpm / 2)  # per minute
            self._limiter = AsyncLimiter(burst, 60.0 * burst / steady)
        self._clock = clock
        self._paused_until = 0.0
        self.calls = 0

    def pause(self, seconds: float) -> None:
        """Hold every call for ``seconds`` from now; never shortens a pause in force.

        The executor calls it on every 429, submit or poll, with the answer's Retry-After
        (1 s when there is none); a concurrency rejection (code 96) pauses nothing."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def wait(self) -> None:
        while (delay := self._paused_until - self._clock()) > 0:  # noqa: ASYNC110 (a deadline)
            await asyncio.sleep(delay)
        if self._limiter is not None:
            await self._limiter.acquire()
        self.calls += 1

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        await self.wait()
        yield
