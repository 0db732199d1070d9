"""Per-provider limits: tasks in flight (adaptive) and requests per minute.

* :class:`AdaptiveSlots` caps the tasks a provider has in flight. Its *target* starts at the
  configured cap; a concurrency rejection (Wiro code 96) or a 429 halves it (never below what
  is running, never below one), and after a cool-down every success raises it by one again,
  up to the cap (additive increase, multiplicative decrease). Repeated rejections lengthen
  the cool-down so probing a hard provider limit costs few requests.
* :class:`RequestGate` spaces every call to a provider (submit, poll, cancel alike) with
  ``aiolimiter``, sized so that *any* 60-second window holds at most ``requests_per_minute``
  calls, and can be paused for everyone when the provider says ``Retry-After``.
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


def effective_limits(configured: Limits | None, concurrency_flag: int | None) -> EffectiveLimits:
    """The manifest's limits for a provider combined with ``--concurrency``.

    ``--concurrency`` caps what the manifest allows (the lower wins); with no manifest value
    it sets the cap. Unset values fall back to conservative defaults."""
    conc = configured.concurrency if configured and configured.concurrency else None
    if concurrency_flag is not None:
        conc = min(conc, concurrency_flag) if conc else concurrency_flag
    rpm = configured.requests_per_minute if configured else None
    return EffectiveLimits(max(1, int(conc or DEFAULT_CONCURRENCY)),
                           float(rpm) if rpm else DEFAULT_REQUESTS_PER_MINUTE)


class AdaptiveSlots:
    """A semaphore whose capacity (the *target*) moves between 1 and ``limit`` (AIMD).

    Waiters are served first come, first served. ``peak`` records the most slots ever held
    at once, so tests can measure that the cap was never exceeded."""

    def __init__(self, limit: int, *, cooldown: float = 5.0, max_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("limit must be ≥ 1")
        self.limit = limit
        self.target = limit
        self.in_use = 0
        self.peak = 0
        self.lowered = 0  # how many times the target was lowered
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.cooldown = cooldown
        self._clock = clock
        self._cool_until = 0.0
        self._last_limited = -math.inf
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
        """The provider refused a call for being over its limit: lower the target.

        Halve it; for a concurrency rejection never below the tasks that do run right now
        (they fit, so the provider's limit is at least that)."""
        now = self._clock()
        halved = max(1, self.target // 2)
        self.target = max(halved, self.in_use) if concurrency else halved
        self.target = max(1, min(self.target, self.limit))
        # A rejection soon after the last one means the limit is hard: probe less often.
        if now - self._last_limited < 2 * self.cooldown + self.base_cooldown:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
        else:
            self.cooldown = self.base_cooldown
        self._last_limited = now
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
        """Hold every call for ``seconds`` (a Retry-After, or a 429 without one)."""
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
