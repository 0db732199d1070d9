"""Calls retried through ``stamina``, whose retry context is entered only after a failure.

Nearly every call succeeds at once; a ``stamina.retry_context`` (a tenacity ``AsyncRetrying``,
its thread-local state, its iterator) costs more CPU than the call's own bookkeeping, and a
10,000-job batch makes tens of thousands of calls. :func:`call_retrying` makes the first try
itself; on a failure ``on`` accepts, it waits the first backoff (as stamina would: ``on``'s
number of seconds, else ``wait_initial`` plus up to ``wait_jitter``) and hands the remaining
attempts to stamina.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

T = TypeVar("T")
_sleep = asyncio.sleep  # the first backoff's (tests watch it apart from stamina's)


async def call_retrying(call: Callable[[], Awaitable[T]], *,
                        on: Callable[[Exception], bool | float], attempts: int | None,
                        wait_initial: float, wait_max: float, wait_jitter: float,
                        rng: random.Random | None = None) -> T:
    """``await call()``, retried while ``on(exc)`` is not False, ``attempts`` tries in all
    (None: no limit), with stamina's jittered exponential backoff between them."""
    try:
        return await call()
    except Exception as exc:
        verdict = on(exc)
        if verdict is False or (attempts is not None and attempts <= 1):
            raise
    if verdict is True:
        delay = min(wait_max, wait_initial + (rng or random).uniform(0, wait_jitter))
    else:
        delay = float(verdict)  # the hook's own wait (a Retry-After)
    await _sleep(delay)
    async for attempt in stamina.retry_context(
            on=on, attempts=None if attempts is None else attempts - 1, timeout=None,
            wait_initial=wait_initial, wait_max=wait_max, wait_jitter=wait_jitter):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover
