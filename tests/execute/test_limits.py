from __future__ import annotations

import asyncio
import random

import pytest

from runner.execute.limits import (
    DEFAULT_CONCURRENCY,
    AdaptiveSlots,
    EffectiveLimits,
    RequestGate,
    effective_limits,
)
from runner.jobs import Limits

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_in_flight_cap_is_never_exceeded_under_contention() -> None:
    slots = AdaptiveSlots(3)
    inside = 0
    worst = 0
    rng = random.Random(4)

    async def worker() -> None:
        nonlocal inside, worst
        for _ in range(5):
            await slots.acquire()
            inside += 1
            worst = max(worst, inside)
            await asyncio.sleep(rng.uniform(0, 0.003))
            inside -= 1
            slots.release()

    await asyncio.gather(*(worker() for _ in range(20)))
    assert worst == 3
    assert slots.peak == 3
    assert slots.in_use == 0


async def test_waiters_are_served_in_order() -> None:
    slots = AdaptiveSlots(1)
    await slots.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.acquire()
        order.append(i)
        slots.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    slots = AdaptiveSlots(1)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    slots.release()
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(), 1)
    assert slots.in_use == 1


def test_aimd_halves_never_below_running_and_raises_after_cooldown() -> None:
    clock = Clock()
    slots = AdaptiveSlots(8, cooldown=5, clock=clock)
    slots.in_use = 2  # two tasks run; a third submit was refused with code 96
    slots.on_limited(concurrency=True)
    assert slots.target == 4
    slots.on_limited(concurrency=True)
    assert slots.target == 2  # halved, but never below what runs
    slots.on_limited(concurrency=True)
    assert slots.target == 2
    slots.on_success()
    assert slots.target == 2  # still cooling down
    clock.now += 1000
    slots.on_success()
    slots.on_success()
    assert slots.target == 4  # +1 per success once cooled down
    slots.in_use = 0
    slots.on_limited(concurrency=False)  # a 429 halves regardless of what runs
    assert slots.target == 2
    for _ in range(10):
        clock.now += 1000
        slots.on_success()
    assert slots.target == 8  # never above the configured cap


def test_repeated_rejections_lengthen_the_cooldown() -> None:
    clock = Clock()
    slots = AdaptiveSlots(4, cooldown=2, max_cooldown=16, clock=clock)
    slots.in_use = 1
    slots.on_limited(concurrency=True)
    first = slots.cooldown
    clock.now += 1
    slots.on_limited(concurrency=True)
    clock.now += 1
    slots.on_limited(concurrency=True)
    assert slots.cooldown > first
    assert slots.cooldown <= 16
    clock.now += 10_000
    slots.on_limited(concurrency=True)
    assert slots.cooldown == 2  # a rejection long after the last one starts over


async def test_lowered_target_holds_back_waiters_until_tasks_finish() -> None:
    slots = AdaptiveSlots(4)
    for _ in range(4):
        await slots.acquire()
    slots.on_limited(concurrency=False)  # target 2 while 4 run
    got = asyncio.create_task(slots.acquire())
    slots.release()
    slots.release()
    await asyncio.sleep(0.01)
    assert not got.done()  # 2 still run: at the target
    slots.release()
    await asyncio.wait_for(got, 1)
    assert slots.in_use == 2


async def test_request_gate_keeps_the_rate() -> None:
    rpm = 600.0  # 10/s: a burst of 10, then 9.83/s
    gate = RequestGate(rpm)
    loop = asyncio.get_running_loop()
    stamps: list[float] = []

    async def call() -> None:
        async with gate():
            stamps.append(loop.time())

    t0 = loop.time()
    await asyncio.gather(*(call() for _ in range(25)))
    stamps = [t - t0 for t in stamps]
    burst, steady_per_s = 10, (rpm - 10) / 60
    assert stamps[-1] >= (25 - burst) / steady_per_s * 0.95
    # Any window of w seconds holds at most burst + w × steady rate (+1 for rounding): so any
    # 60-second window holds at most 10 + 590 = 600.
    for i, start in enumerate(stamps):
        for w in (0.5, 1.0):
            inside = sum(1 for t in stamps[i:] if t < start + w)
            assert inside <= burst + w * steady_per_s + 1
    assert gate.calls == 25


def test_request_gate_sizing_caps_every_minute_window() -> None:
    for rpm in (30, 60, 120, 600, 3600):
        gate = RequestGate(rpm)
        limiter = gate._limiter
        assert limiter is not None
        burst = limiter.max_rate
        per_minute = burst / limiter.time_period * 60
        assert burst + per_minute == pytest.approx(rpm)
    assert RequestGate(None)._limiter is None


async def test_pause_holds_every_call() -> None:
    gate = RequestGate(None)
    loop = asyncio.get_running_loop()
    gate.pause(0.1)
    t0 = loop.time()
    await gate.wait()
    assert loop.time() - t0 >= 0.09


def test_effective_limits() -> None:
    assert effective_limits(None, None) == EffectiveLimits(DEFAULT_CONCURRENCY, 600.0)
    assert effective_limits(Limits(8, 120), None) == EffectiveLimits(8, 120.0)
    assert effective_limits(Limits(8, 120), 3).concurrency == 3  # the flag caps
    assert effective_limits(Limits(2, None), 8).concurrency == 2  # the manifest caps
    assert effective_limits(Limits(None, None), 6).concurrency == 6
