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
    slots.in_use = 5  # five tasks run; a sixth submit was refused with code 96
    slots.on_limited(concurrency=True)
    assert slots.target == 5  # halved to 4, but never below what runs
    slots.on_success()
    assert slots.target == 5  # still cooling down
    clock.now += 1000
    slots.on_success()
    slots.on_success()
    assert slots.target == 7  # +1 per success once cooled down
    slots.in_use = 0
    clock.now += 1000
    slots.on_limited(concurrency=False)  # a 429 halves regardless of what runs
    assert slots.target == 3
    for _ in range(10):
        clock.now += 1000
        slots.on_success()
    assert slots.target == 8  # never above the configured cap


@pytest.mark.parametrize("concurrency", [False, True])
@pytest.mark.parametrize("n", [2, 50])
def test_a_burst_within_the_window_lowers_the_target_once(concurrency: bool, n: int) -> None:
    clock = Clock()
    slots = AdaptiveSlots(16, cooldown=5, clock=clock)
    for _ in range(n):  # n rejections spread over the window the first one opens
        slots.on_limited(concurrency=concurrency)
        clock.now += 4.99 / (n - 1)
    assert slots.target == 16 // 2
    assert slots.lowered == 1
    assert slots.rejections == n
    assert slots.cooldown == 5  # one burst never lengthens the cool-down


def test_rejections_inside_the_window_do_not_restart_the_cooldown() -> None:
    clock = Clock()
    slots = AdaptiveSlots(8, cooldown=5, clock=clock)
    slots.on_limited(concurrency=False)
    clock.now = 4.9
    slots.on_limited(concurrency=False)  # would have restarted it: 4.9 + 5
    slots.on_success()
    assert slots.target == 4
    clock.now = 5.0  # the first rejection's window is over
    slots.on_success()
    assert slots.target == 5


def test_a_rejection_after_the_window_lowers_again() -> None:
    clock = Clock()
    slots = AdaptiveSlots(16, cooldown=5, clock=clock)
    slots.on_limited(concurrency=False)
    clock.now = 4.999
    slots.on_limited(concurrency=False)
    assert (slots.target, slots.lowered) == (8, 1)
    clock.now = 5.0  # the window is [0, 5): a new signal
    slots.on_limited(concurrency=False)
    assert (slots.target, slots.lowered) == (4, 2)
    # The limit was still there right after the window: the next one is twice as long.
    assert slots.cooldown == 10
    clock.now = 14.9
    slots.on_limited(concurrency=False)
    assert (slots.target, slots.lowered) == (4, 2)


def test_recovery_takes_one_success_per_step_back_to_the_limit() -> None:
    clock = Clock()
    limit = 12
    slots = AdaptiveSlots(limit, cooldown=5, clock=clock)
    for _ in range(30):  # a storm of 429s inside one window
        slots.on_limited(concurrency=False)
        clock.now += 0.1
    assert slots.target == limit // 2
    for _ in range(10):  # successes inside the window change nothing
        slots.on_success()
    assert slots.target == limit // 2
    clock.now = 5.0
    needed = 0
    while slots.target < limit:
        before = slots.target
        slots.on_success()
        needed += 1
        assert slots.target == before + 1
    assert needed == limit - limit // 2
    slots.on_success()
    assert slots.target == limit


def test_a_concurrency_burst_follows_what_runs_down_to_one_halving() -> None:
    clock = Clock()
    slots = AdaptiveSlots(16, cooldown=5, clock=clock)
    slots.in_use = 11  # 11 slots held: running tasks and submits still on the wire
    slots.on_limited(concurrency=True)
    assert slots.target == 11  # never below what runs
    slots.in_use = 10  # the refused submits gave their slots back
    clock.now = 0.2
    slots.on_limited(concurrency=True)
    assert slots.target == 10
    for held in (7, 3, 0):
        clock.now += 0.2
        slots.in_use = held
        slots.on_limited(concurrency=True)
        assert slots.target == 8  # one halving per burst, however few run now
    slots.in_use = 12
    clock.now += 0.2
    slots.on_limited(concurrency=True)
    assert slots.target == 8  # a rejection never raises it
    clock.now += 0.2
    slots.on_limited(concurrency=False)
    assert slots.target == 8
    assert (slots.lowered, slots.rejections) == (1, 7)
    assert slots.cooldown == 5


def test_a_concurrency_burst_then_a_429_in_the_window_settles_at_the_halving() -> None:
    clock = Clock()
    slots = AdaptiveSlots(16, cooldown=5, clock=clock)
    slots.in_use = 12
    slots.on_limited(concurrency=True)
    assert slots.target == 12
    clock.now = 1
    slots.on_limited(concurrency=False)  # a 429 knows nothing of what fits
    assert slots.target == 8
    assert slots.lowered == 1


def test_never_below_one() -> None:
    clock = Clock()
    slots = AdaptiveSlots(1, cooldown=5, clock=clock)
    for _ in range(5):
        slots.on_limited(concurrency=False)
        clock.now += 100
    assert slots.target == 1
    slots = AdaptiveSlots(3, cooldown=5, clock=clock)
    for _ in range(5):
        slots.on_limited(concurrency=False)
        clock.now += 100
    assert slots.target == 1


def test_a_hard_limit_lengthens_the_cooldown_one_burst_never_does() -> None:
    clock = Clock()
    slots = AdaptiveSlots(4, cooldown=2, max_cooldown=16, clock=clock)
    slots.in_use = 1
    for _ in range(100):  # one long burst inside its window
        slots.on_limited(concurrency=True)
        clock.now += 0.019
    assert slots.cooldown == 2
    # A hard limit: each raise after the window is refused again at once.
    seen = []
    for _ in range(6):
        clock.now = slots._cool_until
        slots.on_success()
        slots.on_limited(concurrency=True)
        seen.append(slots.cooldown)
    assert seen == [4, 8, 16, 16, 16, 16]
    assert slots.target == 1
    # A rejection more than one cool-down after the window closed starts over.
    clock.now = slots._cool_until + 16
    slots.on_limited(concurrency=True)
    assert slots.cooldown == 2
    assert slots._cool_until == clock.now + 2


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
