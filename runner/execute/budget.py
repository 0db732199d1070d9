"""The budget book: what a run spent, what its tasks in flight may cost, against the caps.

Spent is what the provider reported, or the estimate where a paid (or possibly paid) task
reported nothing; :func:`spent_so_far` reads it back from a journal so a resumed run starts
from what was already paid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from runner.execute.journal import JobRecord, JobState
from runner.jobs import Budget, Job


class BudgetBook:
    """Spent (provider-reported, or the estimate where a paid task reported nothing) plus
    what tasks in flight are estimated to cost, against the caps."""

    def __init__(self, budget: Budget, *, spent_usd: float = 0.0,
                 spent_credits: float = 0.0) -> None:
        self.max_usd = budget.max_usd
        self.max_credits = budget.max_credits
        self.spent_usd = spent_usd
        self.spent_credits = spent_credits
        self._reserved: dict[str, tuple[float, float]] = {}
        self.changed = asyncio.Event()

    def start_from(self, records: Sequence[JobRecord]) -> None:
        """Count what the journal says was already spent (a resumed run)."""
        self.spent_usd, self.spent_credits = spent_so_far(records)

    @property
    def reserved_usd(self) -> float:
        return sum(u for u, _ in self._reserved.values())

    @property
    def reserved_credits(self) -> float:
        return sum(c for _, c in self._reserved.values())

    @property
    def in_flight(self) -> int:
        return len(self._reserved)

    def fits(self, job: Job) -> bool:
        if self.max_usd is not None and job.estimate.usd > 0 and (
                self.spent_usd + self.reserved_usd + job.estimate.usd > self.max_usd + 1e-9):
            return False
        return not (self.max_credits is not None and job.estimate.credits > 0 and (
            self.spent_credits + self.reserved_credits + job.estimate.credits
            > self.max_credits + 1e-9))

    def why_not(self, job: Job) -> str:
        parts = []
        if self.max_usd is not None:
            parts.append(f"${self.spent_usd + self.reserved_usd:.4f} spent or committed of "
                         f"${self.max_usd:.2f}; this job ≈ ${job.estimate.usd:.4f}")
        if self.max_credits is not None:
            parts.append(f"{self.spent_credits + self.reserved_credits:g} credits of "
                         f"{self.max_credits:g}; this job ≈ {job.estimate.credits:g}")
        return "budget: " + "; ".join(parts)

    def reserve(self, job: Job) -> None:
        self._reserved[job.key] = (job.estimate.usd, job.estimate.credits)

    def wake(self) -> None:
        """Wake whoever waits for the budget to change (a reservation freed, a stop)."""
        self.changed.set()
        self.changed = asyncio.Event()

    def settle(self, key: str, usd: float, credits: float) -> None:
        """The task finished: its reservation becomes what it cost."""
        self._reserved.pop(key, None)
        self.spent_usd += usd
        self.spent_credits += credits
        self.wake()

    def release(self, key: str) -> None:
        """Nothing was (or will be) billed for this job."""
        if self._reserved.pop(key, None) is not None:
            self.wake()

    def keep(self, key: str) -> None:
        """The outcome is unknown: count the estimate as spent (it may have been billed)."""
        usd, credits = self._reserved.pop(key, (0.0, 0.0))
        self.spent_usd += usd
        self.spent_credits += credits
        self.wake()


def spent_so_far(records: Sequence[JobRecord], *,
                 committed: bool = False) -> tuple[float, float]:
    """What the journal says was (or may have been) paid: reported costs, estimates where a
    paid or possibly-paid task reported none. ``committed`` also counts the estimate of
    tasks still in flight (they will be billed unless they fail)."""
    usd = credits = 0.0
    for r in records:
        if r.billed or (committed and r.state.attached):
            usd += r.cost_usd if r.cost_usd is not None else r.estimate_usd
            credits += r.credits if r.credits is not None else r.estimate_credits
        elif r.state is JobState.UNKNOWN:
            usd += r.estimate_usd
            credits += r.estimate_credits
        else:
            usd += r.cost_usd or 0.0
            credits += r.credits or 0.0
    return usd, credits
