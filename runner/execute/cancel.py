"""Stopping remote tasks: what a second Ctrl-C, a cancel request and ``seedbatch cancel`` do.

Every task the journal shows in flight (``submitted`` or ``running``, with a task id) is
asked to stop. Three outcomes per task, none of them silent:

* **cancelled** — the host stopped it: the job becomes ``cancelled``;
* **runs on** — the host cannot stop a task (:class:`~runner.errors.CancelUnsupported`): the
  job stays attached to its task, which runs to its end and is billed; its outputs are
  downloaded by the cancelling process if it waits, or by ``resume``. An event
  ``cancel_unsupported`` marks it, so ``status`` and the report show it ran on after a
  cancel and what it cost;
* **refused** — any other error (the task has probably just finished): the job stays
  attached too, and the problem is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runner.errors import CancelUnsupported, ProviderError
from runner.execute.journal import RAN_ON_EVENT, JobRecord, JobState, Journal
from runner.execute.limits import RequestGate
from runner.providers.base import Provider, TaskState


@dataclass
class CancelReport:
    cancelled: list[str] = field(default_factory=list)  # job keys
    running_on: list[str] = field(default_factory=list)  # cannot be stopped: billed, attached
    refused: list[str] = field(default_factory=list)  # the cancel failed: still attached
    problems: list[str] = field(default_factory=list)  # one line each, for the user

    @property
    def attached(self) -> list[str]:
        """Jobs still attached to a task that is (or was) running: to follow and download."""
        return self.running_on + self.refused


def cancel_targets(journal: Journal) -> list[JobRecord]:
    """Jobs whose remote task may still be running (never one that already finished)."""
    return [r for r in journal.jobs() if r.state in (JobState.SUBMITTED, JobState.RUNNING)
            and r.task_id]


async def cancel_remote_tasks(
    journal: Journal,
    providers: Mapping[str, Provider],
    *,
    gates: Mapping[str, RequestGate] | None = None,
    limit_seconds: float = 30.0,
    on_cancelled: Callable[[str], None] | None = None,
    why: str = "",
) -> CancelReport:
    """Ask every task the journal shows in flight to stop; see the module docstring."""
    report = CancelReport()

    async def one(rec: JobRecord) -> None:
        provider = providers.get(rec.provider)
        if provider is None or rec.task_id is None:
            return
        try:
            state = TaskState(rec.task_state) if rec.task_state else TaskState.QUEUED
        except ValueError:
            state = TaskState.RUNNING
        try:
            async with asyncio.timeout(limit_seconds):
                if gates and rec.provider in gates:
                    await gates[rec.provider].wait()
                await provider.cancel(rec.task_id, state)
        except CancelUnsupported as exc:
            report.running_on.append(rec.key)
            journal.note(RAN_ON_EVENT, {"task_id": rec.task_id, "error": str(exc),
                                        "why": why}, rec.key)
            journal.set_reason(rec.key, f"running (cannot be cancelled): {exc.message}")
            return
        except (ProviderError, TimeoutError) as exc:
            report.refused.append(rec.key)
            report.problems.append(f"{rec.name}: task {rec.task_id} could not be cancelled: "
                                   f"{exc or 'timed out'}")
            journal.note("cancel_failed", {"task_id": rec.task_id, "error": str(exc)}, rec.key)
            return
        journal.mark_cancelled(rec.key, why or "cancelled")
        report.cancelled.append(rec.key)
        if on_cancelled is not None:
            on_cancelled(rec.key)

    await asyncio.gather(*(one(r) for r in cancel_targets(journal)))
    return report
