"""When to poll, and when (and whether) to try a call again.

Polling: a task is polled first when it is *likely* done, then at growing intervals.
:class:`LatencyModel` learns, per provider and model, how long tasks take from the answer to
their submit to their completion. What it learns from:

* the provider's own run time when it reports one (``TaskStatus.elapsed_seconds``), kept inside
  what the polls proved (done by the poll that saw it done, not done at the last one that
  did not);
* otherwise the middle of that bracket when a poll found the task still running;
* otherwise (done at the first poll) 98% of the time that poll took: an upper bound, shaded
  so the estimate drifts down until a poll comes too early and brackets the truth again.

Polls climb a ladder of quantiles of the recent durations — the first at the 70th
percentile, the next at the 90th, then at the slowest seen — and beyond it back off ×1.5
from a tenth of the slowest. With a steady latency that is one poll per task, right when it
ends; with durations spread ±j around their mean it costs about 1.4 polls and a delay
near 0.55·j of the mean (±10 % → 1.43 polls, 5.7 % late on average).
When the provider announces an estimate (``SubmitResult.estimated_seconds``) durations are learnt
as a ratio of it, and the first poll waits that estimate until something is learnt.

Before anything is learnt (and nothing announced), one task *probes*: it polls from an
initial guess of a second, each poll 1.15 times as long after the submit as the one before
(at least a quarter of a second apart), so it sees its task done at most 15 % late — about
a dozen polls for a 5-second task, twenty-two for 20 seconds. The other tasks of the same model
wait for its lesson; every ``probe_patience`` seconds one more of them (one that has waited
that long itself) joins the probes, in case the first probe's task is a slow one. A first
wave of N tasks costs the probes' polls plus about one each, however large N is.

Retries: :class:`SubmitRetry` is the hook given to ``stamina`` for one job's submits.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from runner.errors import (
    ConcurrencyLimited,
    ProviderError,
    RateLimited,
    TransientError,
)


@dataclass(frozen=True, slots=True)
class PollSettings:
    initial_guess: float = 1.0  # seconds to the first poll before anything is learnt
    probe_patience: float = 15.0  # how long other tasks wait for the probe's lesson
    probe_growth: float = 1.15  # before anything is learnt, each poll ×1.15 later than the last
    # Polls at these quantiles of the learnt durations, then growing steps.
    ladder: tuple[float, ...] = (0.7, 0.9, 1.0)
    min_gap: float = 0.05  # seconds between two polls of the ladder, at least
    margin: float = 0.0  # first poll at quantile × (1 + margin) + margin_seconds
    margin_seconds: float = 0.005
    min_step: float = 0.25
    step_fraction: float = 0.1  # first re-poll step: this fraction of the expectation
    growth: float = 1.5
    max_step: float = 15.0
    window: int = 64
    # Hosts that push completion: how long polls wait for the push before the polling
    # schedule takes over (a silent channel, a task that ended before it was subscribed):
    # the slowest learnt duration × push_slack + push_margin; push_patience before anything
    # is learnt or announced.
    push_patience: float = 30.0
    push_slack: float = 1.5
    push_margin: float = 2.0


@dataclass
class LatencyModel:
    """How long one model's tasks take, learnt from the tasks seen so far."""

    settings: PollSettings = field(default_factory=PollSettings)
    _samples: deque[float] = field(default_factory=deque)  # seconds, or ratios to estimates
    _ratio_samples: deque[float] = field(default_factory=deque)

    probes: int = 0  # tasks probing this model's latency for the others

    def __post_init__(self) -> None:
        self._samples = deque(maxlen=self.settings.window)
        self._ratio_samples = deque(maxlen=self.settings.window)
        self._news: asyncio.Event | None = None
        self._probes_since = 0.0  # loop time the first of the current probes began
        self._listeners: set[Callable[[], None]] = set()

    def news(self) -> asyncio.Event:
        """Set when something was learnt, or the probe ended (call in the event loop)."""
        if self._news is None:
            self._news = asyncio.Event()
        return self._news

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, with the next news (see :meth:`news`)."""
        self._listeners.add(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        self._listeners.discard(callback)

    def _announce(self) -> None:
        if self._news is not None:
            self._news.set()
            self._news = None
        listeners, self._listeners = self._listeners, set()
        for callback in listeners:
            callback()

    def may_probe(self, now: float, waited: float) -> bool:
        """Whether a task that has waited ``waited`` seconds for a lesson may probe at ``now``
        (loop time): at once when no task probes; otherwise one more probe every
        ``probe_patience`` seconds since the first began, taken by a task that has itself
        waited that long (a probe stuck on one slow task delays the lesson by one patience,
        and the probes' polls grow with the wait, not with the number of tasks waiting)."""
        if self.probes == 0:
            return True
        patience = self.settings.probe_patience
        if patience <= 0:
            return True
        if waited < patience:
            return False
        return self.probes < 1 + int((now - self._probes_since) / patience)

    def next_chance(self, now: float) -> float:
        """The loop time at which :meth:`may_probe` next admits a probe (besides news)."""
        patience = self.settings.probe_patience
        if self.probes == 0 or patience <= 0:
            return now
        return self._probes_since + patience * (int((now - self._probes_since) / patience) + 1)

    def start_probe(self, now: float) -> None:
        if self.probes == 0:
            self._probes_since = now
        self.probes += 1

    def probe_ended(self) -> None:
        """A probing task ended (learnt something or not): wake the tasks waiting on it."""
        self.probes = max(0, self.probes - 1)
        self._announce()

    @property
    def learned(self) -> int:
        return len(self._samples) + len(self._ratio_samples)

    @staticmethod
    def _quantile(values: deque[float], q: float) -> float:
        ordered = sorted(values)
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    def expected(self, announced: float | None = None, q: float | None = None) -> float | None:
        """Seconds from the submit's answer to completion at quantile ``q`` (the ladder's
        first by default); None before anything is learnt or announced."""
        s = self.settings
        q = s.ladder[0] if q is None else q
        if announced and announced > 0 and self._ratio_samples:
            return announced * self._quantile(self._ratio_samples, q)
        if self._samples:
            return self._quantile(self._samples, q)
        if announced and announced > 0:
            return announced
        return None

    def _at(self, expected: float) -> float:
        s = self.settings
        return expected * (1 + s.margin) + s.margin_seconds

    def first_delay(self, announced: float | None = None) -> float:
        expected = self.expected(announced)
        return self.settings.initial_guess if expected is None else self._at(expected)

    def push_silence(self, announced: float | None = None) -> float:
        """Seconds after the submit's answer past which a pushed end is no longer awaited
        before polling (see ``PollSettings.push_patience``)."""
        s = self.settings
        slowest = self.expected(announced, 1.0)
        if slowest is None:
            return s.push_patience
        return slowest * s.push_slack + s.push_margin

    def next_delay(self, elapsed: float, not_done_polls: int,
                   announced: float | None = None) -> float:
        """Seconds to wait after the ``not_done_polls``-th poll that found the task unfinished,
        ``elapsed`` seconds after the submit's answer.

        Up the ladder first (the next quantile of learnt durations still ahead), then steps
        growing ×``growth`` from a tenth of the slowest learnt duration."""
        s = self.settings
        if self.learned or (announced and announced > 0):
            for q in s.ladder[1:]:
                target = self.expected(announced, q)
                if target is not None and self._at(target) > elapsed + s.min_gap / 2:
                    return max(s.min_gap, self._at(target) - elapsed)
        slowest = self.expected(announced, 1.0)
        if slowest is None:
            # Nothing known: each poll comes ×probe_growth after the submit's answer as the
            # one before, so a task is seen done at most (probe_growth − 1) of its time late.
            return min(max(s.min_step, elapsed * (s.probe_growth - 1)), s.max_step)
        beyond = max(1, not_done_polls - (len(s.ladder) - 1))
        step = max(s.min_step, s.step_fraction * slowest) * s.growth ** (beyond - 1)
        return min(step, max(s.min_step, s.max_step))

    def observe(self, *, done_by: float, not_done_at: float | None,
                reported: float | None = None, announced: float | None = None) -> float:
        """Learn from one finished task; returns the duration sample taken (seconds).

        ``done_by``: seconds from the submit's answer to the answer of the poll that saw it
        finished; ``not_done_at``: to the sending of the last poll that saw it unfinished."""
        lo = not_done_at if not_done_at is not None else 0.0
        hi = max(done_by, lo)
        if reported is not None and reported >= 0:
            sample = min(max(reported, lo), hi)
        elif not_done_at is not None:
            sample = (lo + hi) / 2
        else:
            sample = hi * 0.98
        if announced and announced > 0:
            self._ratio_samples.append(sample / announced)
        else:
            self._samples.append(sample)
        self._announce()
        return sample


class LatencyBook:
    """One :class:`LatencyModel` per (provider, model)."""

    def __init__(self, settings: PollSettings | None = None,
                 initial_guess: dict[str, float] | None = None) -> None:
        self.settings = settings or PollSettings()
        # provider → seconds to the first poll (each provider's ``initial_latency``, passed
        # in by the caller); a provider not named starts from ``settings.initial_guess``
        self.initial_guess = dict(initial_guess or {})
        self._models: dict[tuple[str, str], LatencyModel] = {}

    def fastest(self, provider: str) -> float | None:
        """The shortest typical duration learnt for any of ``provider``'s models."""
        found = [m.expected() for (p, _), m in self._models.items() if p == provider]
        known = [e for e in found if e is not None and e > 0]
        return min(known) if known else None

    def model(self, provider: str, model: str) -> LatencyModel:
        key = (provider, model)
        if key not in self._models:
            guess = self.initial_guess.get(provider, self.settings.initial_guess)
            self._models[key] = LatencyModel(replace(self.settings, initial_guess=guess))
        return self._models[key]


def jittered(delay: float, spread: float = 0.25, rng: random.Random | None = None) -> float:
    """``delay`` ± ``spread``×delay, never negative."""
    r = (rng or random).uniform(-spread, spread)
    return max(0.0, delay * (1 + r))


@dataclass
class SubmitRetry:
    """The ``stamina`` backoff hook for one job's submits.

    * ConcurrencyLimited / RateLimited: wait for a slot. They do not count against the job's
      retry budget (waiting is not failing); the delay honours ``retry_after`` and otherwise
      grows ×1.5 from a short step up to ``max_wait_limited``, jittered. The executor has
      already lowered the provider's in-flight target, so re-acquiring a slot itself waits
      for a running task to finish.
    * ServerError / ConnectFailed: count against ``max_failures``; the delay is stamina's
      jittered exponential backoff, or ``retry_after``.
    * anything else: no retry (JobRejected, UnknownOutcome, fatal errors).
    """

    max_failures: int = 5
    limited_step: float = 0.5
    max_wait_limited: float = 30.0
    failures: int = 0
    limited: int = 0
    last_error: ProviderError | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __call__(self, exc: Exception) -> bool | float:
        if not isinstance(exc, TransientError):
            return False
        self.last_error = exc
        if isinstance(exc, ConcurrencyLimited | RateLimited):
            self.limited += 1
            if exc.retry_after is not None:
                return exc.retry_after + self.rng.uniform(0, 0.1 * exc.retry_after + 0.05)
            step = min(self.max_wait_limited, self.limited_step * 1.5 ** (self.limited - 1))
            return self.rng.uniform(step / 2, step)
        self.failures += 1
        if self.failures > self.max_failures:
            return False
        if exc.retry_after is not None:
            return exc.retry_after + self.rng.uniform(0, 0.1 * exc.retry_after + 0.05)
        return True


def poll_error_delay(consecutive: int, retry_after: float | None = None,
                     rng: random.Random | None = None) -> float:
    """Backoff between failed polls (polls are safe to repeat): jittered ×2 from 0.5 s."""
    if retry_after is not None:
        return retry_after
    base = min(30.0, 0.5 * 2 ** max(0, consecutive - 1))
    return (rng or random).uniform(base / 2, base)
