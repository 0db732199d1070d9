from __future__ import annotations

import random

import pytest

from runner.errors import (
    AuthError,
    ConcurrencyLimited,
    ConnectFailed,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.execute.policy import LatencyBook, LatencyModel, PollSettings, SubmitRetry


def simulate(model: LatencyModel, durations: list[float], *, reported: bool,
             announced: float | None = None, rtt: float = 0.0) -> tuple[list[int], list[float]]:
    """Poll each task as the executor does; returns polls per task and detection delays."""
    polls_per_task, delays = [], []
    for duration in durations:
        t = model.first_delay(announced)
        polls, not_done, not_done_at = 0, 0, None
        while True:
            polls += 1
            if t >= duration:
                break
            not_done += 1
            not_done_at = t
            t += model.next_delay(t + rtt, not_done, announced)
        model.observe(done_by=t + rtt, not_done_at=not_done_at,
                      reported=duration if reported else None, announced=announced)
        polls_per_task.append(polls)
        delays.append(t - duration)
    return polls_per_task, delays


def test_before_anything_is_learnt_the_first_poll_is_the_guess_or_the_announcement() -> None:
    model = LatencyModel(PollSettings(initial_guess=3.0))
    assert model.first_delay() == 3.0
    assert model.first_delay(announced=20.0) == pytest.approx(20.0, rel=0.01)


def test_fixed_latency_with_reported_run_time_costs_one_poll_and_little_delay() -> None:
    model = LatencyModel(PollSettings(initial_guess=2.0))
    polls, delays = simulate(model, [5.0] * 200, reported=True, rtt=0.01)
    assert sum(polls[20:]) / 180 == 1.0
    assert max(delays[20:]) <= 0.05 * 5.0
    assert sum(polls) / len(polls) <= 1.5  # the first task's backoff amortised


def test_without_reported_time_the_estimate_still_converges() -> None:
    model = LatencyModel(PollSettings(initial_guess=1.0))
    polls, delays = simulate(model, [4.0] * 400, reported=False, rtt=0.01)
    tail = slice(100, None)
    assert sum(polls[tail]) / 300 <= 1.5
    assert sum(delays[tail]) / 300 <= 0.1 * 4.0


def test_jittered_latency_keeps_polls_low() -> None:
    rng = random.Random(7)
    durations = [10 * rng.uniform(0.8, 1.2) for _ in range(400)]
    model = LatencyModel(PollSettings(initial_guess=2.0))
    polls, delays = simulate(model, durations, reported=True)
    assert sum(polls[50:]) / 350 <= 1.5
    assert sum(delays[50:]) / 350 <= 0.15 * 10


def test_announced_estimates_are_learnt_as_a_ratio() -> None:
    model = LatencyModel()
    # The provider announces 10 s; tasks take 6.
    polls, _ = simulate(model, [6.0] * 50, reported=True, announced=10.0)
    assert model.first_delay(announced=10.0) == pytest.approx(6.0, rel=0.02)
    assert model.first_delay(announced=20.0) == pytest.approx(12.0, rel=0.02)
    assert sum(polls[5:]) / 45 == 1.0


def test_past_the_slowest_learnt_duration_re_polls_back_off_and_are_capped() -> None:
    s = PollSettings(initial_guess=1.0, min_step=0.25, growth=1.5, max_step=4.0)
    model = LatencyModel(s)
    model.observe(done_by=5.0, not_done_at=4.9, reported=5.0)
    steps = [model.next_delay(elapsed=10.0, not_done_polls=k) for k in range(3, 14)]
    assert steps[0] == pytest.approx(0.5)  # a tenth of the slowest
    assert steps == sorted(steps)
    assert steps[1] == pytest.approx(steps[0] * 1.5)
    assert max(steps) == 4.0


@pytest.mark.parametrize("duration", [0.7, 3.0, 5.0, 20.0, 60.0])
def test_before_anything_is_learnt_polls_grow_geometrically(duration: float) -> None:
    model = LatencyModel(PollSettings(initial_guess=1.0, min_step=0.25, max_step=15.0))
    t, polls = model.first_delay(), 1
    while t < duration:
        t += model.next_delay(t, polls)
        polls += 1
    late = t - duration
    assert late <= max(1.0 - duration, 0.25, 0.15 * duration) + 1e-9  # ≤ 15 % late
    assert polls <= 30


def test_a_late_lesson_pushes_a_too_early_poll_out() -> None:
    model = LatencyModel(PollSettings(initial_guess=1.0))
    for _ in range(5):
        model.observe(done_by=30.0, not_done_at=29.0, reported=30.0)
    # A task polled at 2 s (before anything was learnt) waits until ~30 s, not 2.25 s.
    assert model.next_delay(elapsed=2.0, not_done_polls=1) == pytest.approx(28.0, abs=0.1)


def test_latency_book_keeps_one_model_per_provider_and_model() -> None:
    book = LatencyBook(initial_guess={"wiro": 3.0, "pixwith": 7.0})
    a = book.model("wiro", "wiro/seedream-v4")
    assert book.model("wiro", "wiro/seedream-v4") is a
    assert book.model("wiro", "wiro/seedream-v3") is not a
    assert a.first_delay() == 3.0
    assert book.model("pixwith", "pixwith/seedream-4.5").first_delay() == 7.0


def test_submit_retry_waiting_for_a_slot_does_not_burn_the_budget() -> None:
    hook = SubmitRetry(max_failures=2, limited_step=0.5, max_wait_limited=4.0,
                       rng=random.Random(1))
    for _ in range(30):
        delay = hook(ConcurrencyLimited("96", provider="wiro", code=96))
        assert isinstance(delay, float)
        assert 0 < delay <= 4.0
    assert hook.failures == 0
    assert hook(RateLimited("429", retry_after=3.0)) >= 3.0
    assert hook(ServerError("503")) is True
    assert hook(ConnectFailed("refused")) is True
    assert hook(ServerError("503")) is False  # third real failure: give up
    assert hook.limited == 31


def test_submit_retry_never_retries_what_may_have_created_a_task_or_is_final() -> None:
    hook = SubmitRetry()
    assert hook(UnknownOutcome("lost")) is False
    assert hook(JobRejected("bad size")) is False
    assert hook(AuthError("bad key")) is False
    assert hook(ValueError("bug")) is False
    assert hook(ServerError("busy", retry_after=2.0)) >= 2.0


def test_a_pushed_end_is_awaited_until_the_task_overstays_what_it_should_take() -> None:
    model = LatencyModel(PollSettings(push_patience=30.0, push_slack=1.5, push_margin=2.0))
    assert model.push_silence() == 30.0  # nothing learnt yet
    for seconds in (4.0, 6.0, 8.0):
        model.observe(done_by=seconds, not_done_at=None, reported=seconds)
    assert model.push_silence() == pytest.approx(8.0 * 1.5 + 2.0)  # the slowest learnt
    announced = LatencyModel(PollSettings(push_patience=30.0))
    assert announced.push_silence(10.0) == pytest.approx(10.0 * 1.5 + 2.0)


def test_one_more_probe_per_patience_each_taken_by_a_task_that_waited_that_long() -> None:
    model = LatencyModel(PollSettings(probe_patience=10.0))
    assert model.may_probe(100.0, waited=0.0)  # nobody probes: the first task, at once
    model.start_probe(100.0)
    assert not model.may_probe(105.0, waited=5.0)
    assert model.next_chance(105.0) == 110.0
    assert not model.may_probe(110.0, waited=9.0)  # a place, but not a patient enough task
    assert model.may_probe(110.0, waited=10.0)
    model.start_probe(110.0)
    assert not model.may_probe(119.0, waited=19.0)  # one more per patience, not per task
    assert model.next_chance(119.0) == 120.0
    assert model.may_probe(120.0, waited=20.0)
    woken: list[str] = []
    model.listen(lambda: woken.append("news"))
    model.probe_ended()
    model.probe_ended()
    assert woken == ["news"]  # listeners hear the next news once
    model.probe_ended()
    assert model.probes == 0
    assert model.may_probe(121.0, waited=0.0)  # no probe left: the next task probes at once
    model.start_probe(121.0)
    assert model.next_chance(121.5) == 131.0  # the count restarts from the new probe
