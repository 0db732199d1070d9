"""The executor: submit, follow and download every job of a run, within limits, paying once.

Shape of a run (one asyncio loop)::

    dispatcher per provider ── for each pending job, in plan order:
        wait for an in-flight slot (AdaptiveSlots) ─▶ reserve its estimated cost (Budget)
        ─▶ wait for one of the provider's submit turns (``submits_at_once``) ─▶ spawn the
        job's task (a job not yet dispatched owns no task)
    job task:
        submit  (journal: ``submitting`` + attempt committed first; every call through the
                 provider's RequestGate; retried only on TransientError, via stamina)
        follow  (first poll when the task is likely done — LatencyBook — then backing off;
                 the slot is released the moment the task is seen finished)
        download every output (streamed, checked, atomic) ─▶ ``succeeded``

Never paying twice: a submit is sent again only after an error that proves no task was
created. A lost answer (UnknownOutcome), or a process stopped mid-submit, leaves the job
``unknown``; only ``resume --retry-unknown`` (the user's explicit choice) sends it again.
A fatal answer (credentials, balance) stops every submit; tasks in flight are still
followed and downloaded. :meth:`Executor.interrupt` does the same on a first Ctrl-C; a
second (or a cancel request written in the journal by ``seedbatch cancel``) cancels the
remote tasks and ends the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import (
    ConcurrencyLimited,
    FatalProviderError,
    JobRejected,
    ProviderError,
    RateLimited,
    TransientError,
    UnknownOutcome,
)
from runner.execute.budget import BudgetBook
from runner.execute.cancel import CancelReport, cancel_remote_tasks
from runner.execute.download import DownloadError, download
from runner.execute.journal import RAN_ON_EVENT, TASK_SUCCEEDED, JobRecord, JobState, Journal
from runner.execute.lanes import SUBMITS_AT_ONCE, Lane, SlotHolder
from runner.execute.limits import AdaptiveSlots, EffectiveLimits, RequestGate
from runner.execute.policy import LatencyBook, LatencyModel, PollSettings, SubmitRetry
from runner.execute.progress import NullProgress, ProgressSink
from runner.execute.retrying import call_retrying
from runner.jobs import Budget, Job
from runner.media import ACCEPTED_TYPES as _EXT_OF
from runner.outputs import OutputRecord, ReuseLookup
from runner.providers.base import (
    CompletionPush,
    Provider,
    RemoteOutput,
    SubmitResult,
    TaskState,
    TaskStatus,
)
from runner.rundir import OUTPUTS_DIR, output_name_for

#: Every job state with its name, in order (iterating an Enum costs a generator per call).
_STATE_NAMES = tuple((s, str(s)) for s in JobState)


@dataclass(frozen=True)
class ExecutorOptions:
    submit_failures: int = 5  # ServerError/ConnectFailed per job before it fails
    poll_attempts: int = 8  # consecutive failed polls before a task is left for resume
    task_timeout: float = 1800.0  # seconds after submit before a task is left for resume
    download_attempts: int = 6
    download_concurrency: int = 8
    cancel_check_interval: float = 0.5
    cancel_timeout: float = 30.0
    retry_wait_initial: float = 0.5  # stamina: first backoff (and its jitter), seconds
    retry_wait_max: float = 30.0
    limited_wait_initial: float = 0.5  # first wait after a concurrency/rate rejection
    download_backoff: float = 0.5
    cooldown: float = 5.0
    # Seconds between the starts of two submits to one provider. None: a quarter of the
    # shortest learnt task duration divided by the provider's in-flight cap, at most
    # ``max_submit_spacing`` — never a limit on throughput (a slot frees every duration/cap
    # seconds at best), but a wave of slots freed together is spread out, so its tasks do
    # not all finish, get polled and downloaded in one burst again.
    submit_spacing: float | None = None
    max_submit_spacing: float = 0.05
    # Jobs of one provider being submitted at once (waiting for their turn, or their answer):
    # jobs beyond them wait in the dispatcher, without a task, a request or a journal write.
    submits_at_once: int = SUBMITS_AT_ONCE
    poll: PollSettings = field(default_factory=PollSettings)
    initial_guess: Mapping[str, float] | None = None
    retry_unknown: bool = False


@dataclass
class Outcome:
    counts: dict[str, int]
    interrupted: bool = False
    cancelled: bool = False
    fatal: list[FatalProviderError] = field(default_factory=list)
    budget_held: int = 0
    budget_reason: str = ""
    spent_usd: float = 0.0
    spent_credits: float = 0.0
    images: int = 0
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)
    running_on: int = 0  # tasks a cancel could not stop (they run on and are billed)
    left_attached: int = 0  # of those and of refused cancels: still running, for resume


def _answered(result: SubmitResult) -> bool:
    """The submit's answer holds the task's end (a synchronous host): nothing to poll."""
    return result.final is not None and result.final.state.terminal


def _output_rows(outputs: Sequence[RemoteOutput]) -> list[dict[str, Any]]:
    """Remote outputs as the journal keeps them."""
    return [{"url": o.url, "name": o.name, "content_type": o.content_type, "size": o.size}
            for o in outputs]


class _Turn(enum.Enum):
    """What ended a wait between polls."""

    POLL = "poll"  # the schedule's time (or the push's silence) came
    PUSHED = "pushed"  # the host pushed the task's end
    PROBE = "probe"  # the push is late, nothing is learnt: this task now probes


class _Stopped(Exception):
    """Submitting stopped (interrupt, fatal error, cancel): the job stays pending."""


def _wall_age(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        then = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


class Executor:
    def __init__(
        self,
        *,
        run_dir: Path,
        journal: Journal,
        jobs: Sequence[Job],
        output_names: Mapping[str, Mapping[str, Mapping[str, str]]],
        providers: Mapping[str, Provider],
        limits: Mapping[str, EffectiveLimits],
        budget: Budget | None = None,
        progress: ProgressSink | None = None,
        options: ExecutorOptions | None = None,
        reuse: ReuseLookup | None = None,
        on_succeeded: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.journal = journal
        self.jobs = {job.key: job for job in jobs}
        self.output_names = output_names
        self.options = options or ExecutorOptions()
        self.progress = progress or NullProgress()
        self.reuse = reuse
        # Told each job key whose outputs were downloaded (not reused), in the loop: it
        # must return at once (the store's uploads queue work and go on).
        self.on_succeeded = on_succeeded
        self.lanes = {
            name: Lane(name, provider, limits[name],
                       AdaptiveSlots(limits[name].concurrency, cooldown=self.options.cooldown),
                       RequestGate(limits[name].requests_per_minute),
                       submits=asyncio.Semaphore(self.options.submits_at_once))
            for name, provider in providers.items()
        }
        self.latency = LatencyBook(self.options.poll, dict(self.options.initial_guess)
                                   if self.options.initial_guess is not None else None)
        for lane in self.lanes.values():
            lane.spacing = functools.partial(self._spacing, lane)
        # Hosts that push completion (CompletionPush): their pushes race the polling schedule
        self._push = {name: p for name, p in providers.items() if isinstance(p, CompletionPush)}
        self._followed: dict[tuple[str, str], str] = {}  # (provider, task id) → job name
        for name, pusher in self._push.items():
            pusher.on_task_progress(functools.partial(self._task_progress, name))
        self.budget = BudgetBook(budget or Budget())
        self.stopping: str | None = None
        self.fatal: list[FatalProviderError] = []
        self._interrupts = 0
        self._cancelling = False
        self._cancel_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set whenever no job task is left
        self._dispatchers: list[asyncio.Task[None]] = []
        self._state: dict[str, JobState] = {}
        self._counts: Counter[JobState] = Counter()
        self._claimed: dict[str, str] = {}  # output path → job key
        self._recorded: set[str] = set()  # keys of jobs with an output in the journal
        self._download_sem: asyncio.Semaphore | None = None
        self._budget_held: dict[str, str] = {}
        self._task_of: dict[str, asyncio.Task[None]] = {}
        self._awaited_after_cancel: list[str] = []  # tasks that could not be stopped
        self._left_running_on = 0
        self.cancel_report: CancelReport | None = None
        self.notes: list[str] = []

    def _spacing(self, lane: Lane) -> float:
        if self.options.submit_spacing is not None:
            return self.options.submit_spacing
        fastest = self.latency.fastest(lane.name)
        if fastest is None:
            return 0.0
        return min(self.options.max_submit_spacing, 0.25 * fastest / lane.slots.target)

    # -- bookkeeping ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        # kept up to date by _set_state: O(states), not O(jobs), at every state change
        return {name: self._counts.get(s, 0) for s, name in _STATE_NAMES}

    def _set_state(self, key: str, state: JobState) -> JobState | None:
        old = self._state.get(key)
        self._state[key] = state
        if old is not None:
            self._counts[old] -= 1
        self._counts[state] += 1
        return old

    def _track(self, key: str, state: JobState, detail: str = "") -> None:
        old = self._set_state(key, state)
        if old is not state:
            job = self.jobs.get(key)
            self.progress.job_state(job.name if job else key, str(state), detail)
            self._refresh()

    def _task_progress(self, provider: str, task_id: str, percent: float | None) -> None:
        name = self._followed.get((provider, task_id))
        show = getattr(self.progress, "task_progress", None)
        if name is not None and show is not None:
            show(name, percent)

    def _refresh(self) -> None:
        self.progress.update(self.counts(), self.budget.spent_usd, self.budget.spent_credits)

    def stop(self, reason: str) -> None:
        """Stop submitting (jobs not yet submitted stay pending); in-flight tasks go on."""
        if self.stopping is None:
            self.stopping = reason
        self.budget.wake()
        # Jobs not sent yet (waiting for a slot, or backing off before another try) stop
        # now rather than after their wait; nothing of theirs exists remotely.
        for key, task in list(self._task_of.items()):
            if not task.done() and self._state.get(key) is JobState.PENDING:
                task.cancel()

    def _on_fatal(self, lane: Lane, exc: FatalProviderError) -> None:
        if lane.fatal is None:
            lane.fatal = exc
            self.fatal.append(exc)
            self.progress.notice(f"{exc} — no more jobs will be submitted; tasks in flight are "
                                 f"still followed and downloaded")
            self.journal.note("fatal", {"provider": lane.name, "error": str(exc)})
        self.stop("fatal")

    def interrupt(self) -> None:
        """Ctrl-C: the first stops new submits; the second cancels the remote tasks; a third
        (while tasks that cannot be cancelled are awaited) leaves them for ``resume``."""
        self._interrupts += 1
        if self._cancelling:
            self._leave_running_on()
        elif self._interrupts == 1:
            running = sum(1 for s in self._state.values() if s.in_flight)
            self.journal.note("interrupt", {"in_flight": running})
            self.progress.notice(f"Interrupted: no new jobs will be submitted; waiting for "
                                 f"{running} task{'s' if running != 1 else ''} in flight to "
                                 f"finish and download. Press Ctrl-C again to cancel them.")
            self.stop("interrupted")
        else:
            self.cancel_all("second interrupt")

    def cancel_all(self, why: str) -> None:
        """Cancel every remote task in flight and end the run (exit 130). Tasks the host
        cannot stop are followed and downloaded before the run ends."""
        if self._cancelling:
            return
        self._cancelling = True
        self.stop("cancelled")
        self.progress.notice(f"Cancelling remote tasks ({why})…")
        self._cancel_task = asyncio.get_running_loop().create_task(self._cancel_everything(why))

    def _leave_running_on(self) -> None:
        """Stop waiting for tasks that could not be cancelled: they stay attached (running,
        billed) and ``resume`` downloads them."""
        waiting = [key for key in self._awaited_after_cancel
                   if (task := self._task_of.get(key)) is not None and not task.done()]
        if not waiting:
            return
        self._left_running_on = len(waiting)
        self.journal.note("left_running", {"jobs": len(waiting)})
        self.progress.notice(f"Leaving {len(waiting)} task{'s' if len(waiting) != 1 else ''} "
                             f"that cannot be cancelled: they run on and are billed; "
                             f"`seedbatch resume` downloads their outputs.")
        for key in waiting:
            self._task_of[key].cancel()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> Outcome:
        started = time.monotonic()
        self._download_sem = asyncio.Semaphore(self.options.download_concurrency)
        records = self.journal.jobs()
        self._state = {rec.key: rec.state for rec in records}
        self._counts = Counter(self._state.values())
        self.progress.start(len(records), self.counts())
        reattach, pending = self._prepare(records)
        del records  # a record per job: not kept for the whole run
        self.budget.start_from(self.journal.jobs())
        for out in self.journal.outputs():
            self._claimed[out.path] = out.job_key
            self._recorded.add(out.job_key)
        self._refresh()
        watcher = asyncio.create_task(self._watch_cancel_requests())
        try:
            for rec in reattach:
                self._spawn(rec.key, self._reattach(rec))
            by_provider: dict[str, list[Job]] = {}
            for job in pending:
                by_provider.setdefault(job.provider, []).append(job)
            self._dispatchers = [asyncio.create_task(self._dispatch(self.lanes[name], jobs))
                                 for name, jobs in by_provider.items()]
            await self._drain()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._cancel_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._cancel_task
            self.progress.stop()
        for key, reason in self._budget_held.items():
            if self._state.get(key) is JobState.PENDING:
                self.journal.set_reason(key, reason)
        counts = self.counts()
        outcome = Outcome(
            counts=counts,
            interrupted=self._interrupts > 0 or self._cancelling,
            cancelled=self._cancelling,
            fatal=list(self.fatal),
            budget_held=sum(1 for k in self._budget_held
                            if self._state.get(k) is JobState.PENDING),
            budget_reason=next(iter(self._budget_held.values()), ""),
            spent_usd=self.budget.spent_usd,
            spent_credits=self.budget.spent_credits,
            images=len(self.journal.outputs()),
            elapsed=time.monotonic() - started,
            notes=list(self.notes),
            running_on=len(self.cancel_report.running_on) if self.cancel_report else 0,
            left_attached=sum(1 for s in self._state.values() if s.attached),
        )
        return outcome

    async def _drain(self) -> None:
        # Wakes when a dispatcher or the cancel task ends, or when no job task is left (an
        # event set by the tasks' done callback): O(1) per wake-up, not O(tasks in flight).
        while True:
            waiting: list[asyncio.Future[Any]] = [t for t in self._dispatchers if not t.done()]
            if self._cancel_task is not None and not self._cancel_task.done():
                waiting.append(self._cancel_task)
            idle: asyncio.Task[Any] | None = None
            if self._tasks:
                self._idle.clear()
                idle = asyncio.get_running_loop().create_task(self._idle.wait())
                waiting.append(idle)
            if not waiting:
                break
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if idle is not None and not idle.done():
                    idle.cancel()
        for task in self._dispatchers:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    def _spawn(self, key: str, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self._task_of[key] = task
        task.add_done_callback(functools.partial(self._task_done, key))

    def _task_done(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._task_of.get(key) is task:
            del self._task_of[key]  # nothing of a finished job stays for the rest of the run
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._job_task_failed(key, exc)
        if not self._tasks:
            self._idle.set()

    def _job_task_failed(self, key: str, exc: BaseException) -> None:
        """One job's task ended with an unexpected error: it ends that job, never the run
        (handled here, in the task's done callback: no wrapping coroutine per job)."""
        if isinstance(exc, Exception):
            what = f"internal error ({type(exc).__name__}: {exc})"
            job = self.jobs.get(key)
            self.notes.append(f"{job.name if job else key}: {what}")
            with contextlib.suppress(Exception):
                self.journal.note("internal_error", {"error": what}, key)
                state = self._state.get(key)
                if state is JobState.SUBMITTING:
                    self._submit_abandoned(key, what)
                elif state is JobState.PENDING:
                    self._fail(key, what)
                # a task that exists stays attached: resume follows it

    def _prepare(self, records: Sequence[JobRecord]) -> tuple[list[JobRecord], list[Job]]:
        """Sort the journal's jobs into: follow again (a task exists), submit, leave alone."""
        reattach: list[JobRecord] = []
        pending: list[Job] = []
        for rec in records:
            state = rec.state
            if state is JobState.SUBMITTING:
                reason = ("the run stopped while this job's submit was in flight: a task may "
                          "exist (and be billed)")
                if self.options.retry_unknown:
                    self.journal.set_pending(rec.key, clear_task=True,
                                             detail="--retry-unknown: " + reason)
                    state = JobState.PENDING
                else:
                    self.journal.mark_unknown(rec.key, reason)
                    state = JobState.UNKNOWN
            elif state is JobState.UNKNOWN and self.options.retry_unknown:
                self.journal.set_pending(rec.key, clear_task=True,
                                         detail="--retry-unknown accepted: sent again")
                state = JobState.PENDING
            self._track(rec.key, state)
            if rec.key not in self.jobs:
                continue
            if state.attached and rec.task_id:
                reattach.append(rec)
            elif rec.paid_not_downloaded:
                reattach.append(rec)  # paid for, download failed: fetch it again
            elif state.attached:  # attached without a task id cannot happen; be safe
                self.journal.mark_unknown(rec.key, "no task id recorded")
                self._set_state(rec.key, JobState.UNKNOWN)
            elif state is JobState.PENDING:
                job = self.jobs[rec.key]
                if self.reuse is not None and self._apply_reuse(job):
                    continue
                if job.provider not in self.lanes:
                    self.journal.set_reason(job.key, f"not run: no {job.provider} client "
                                            f"(its outputs were to be reused); resume runs it")
                    continue
                pending.append(job)
        return reattach, pending

    # -- reuse ----------------------------------------------------------------------------

    def _apply_reuse(self, job: Job) -> bool:
        assert self.reuse is not None
        hit = self.reuse(job)
        if hit is None or not hit.outputs:
            return False
        records = []
        for out in hit.outputs:
            ext = _EXT_OF.get(out.content_type, out.source.suffix.lstrip(".") or "png")
            names = self.output_names.get(job.key, {})
            rel = f"{OUTPUTS_DIR}/{output_name_for(names, out.index, ext)}"
            dest = self.run_dir / rel
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(out.source, dest)
                except OSError:
                    shutil.copy2(out.source, dest)
            except OSError as exc:
                self.journal.note("reuse_failed", {"from": hit.origin, "error": str(exc)},
                                  job.key)
                if hit.via:
                    self.notes.append(f"{job.name}: not placed from the {hit.via} ({exc}); "
                                      f"submitted instead")
                return False
            records.append(OutputRecord(job.key, out.index, rel, out.url, out.bytes, out.sha256,
                                        out.content_type, out.width, out.height))
        self.journal.mark_reused(job.key, records, hit.origin, via=hit.via)
        self._track(job.key, JobState.REUSED,
                    f"from {hit.via} (run {hit.origin})" if hit.via else f"from {hit.origin}")
        return True

    # -- dispatch -------------------------------------------------------------------------

    async def _dispatch(self, lane: Lane, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if self.stopping:
                return
            await lane.slots.acquire()
            if self.stopping:
                lane.slots.release()
                return
            if not await self._reserve(job):
                lane.slots.release()
                if self.stopping:
                    return
                self._budget_held[job.key] = self.budget.why_not(job)
                continue
            try:
                await lane.submits.acquire()  # released when the job's submit ends
            except asyncio.CancelledError:
                self.budget.release(job.key)
                lane.slots.release()
                raise
            if self.stopping:
                lane.submits.release()
                self.budget.release(job.key)
                lane.slots.release()
                return
            self._spawn(job.key, self._run_job(job, lane))

    async def _reserve(self, job: Job) -> bool:
        """Reserve the job's estimated cost; wait while tasks in flight may free some."""
        while not self.stopping:
            if self.budget.fits(job):
                self.budget.reserve(job)
                return True
            if self.budget.in_flight == 0:
                return False
            await self.budget.changed.wait()
        return False

    # -- one job --------------------------------------------------------------------------

    async def _run_job(self, job: Job, lane: Lane) -> None:
        """Submit (the dispatcher handed over a held slot and submit turn), follow,
        download."""
        slot = SlotHolder(lane.slots, held=True)
        status: TaskStatus | None = None
        try:
            try:
                result = await self._submit(job, lane, slot)
            finally:
                lane.submits.release()
            if result is None:
                return
            if _answered(result):
                # a synchronous host: the answer held the task's end, journaled with it
                slot.release()
                assert result.final is not None
                await self._finish(job, lane, result.final, journaled=True)
                return
            t0 = asyncio.get_running_loop().time()
            status = await self._follow(job, lane, slot, result.task_id, t0,
                                        result.estimated_seconds, learn=True)
            if status is None:
                self._left_in_flight(job.key)
        finally:
            slot.release()
        if status is not None:
            await self._finish(job, lane, status)

    def _left_in_flight(self, key: str) -> None:
        """A task is no longer followed but was not seen to end: it may still be billed."""
        if self._state.get(key) is JobState.FAILED:
            self.budget.release(key)
        else:
            self.budget.keep(key)

    async def _submit(self, job: Job, lane: Lane, slot: SlotHolder) -> SubmitResult | None:
        """Submit with retries (the slot is held on entry, and on return with a result).

        Returns None when the job ended (failed, unknown) or stays pending (stopped)."""
        hook = SubmitRetry(max_failures=self.options.submit_failures,
                           limited_step=self.options.limited_wait_initial,
                           max_wait_limited=self.options.retry_wait_max)

        async def once() -> SubmitResult | None:
            await self._wait_for_turn(lane, slot)
            return await self._send_submit(job, lane, slot)

        try:
            return await call_retrying(once, on=hook, attempts=None,
                                       wait_initial=self.options.retry_wait_initial,
                                       wait_max=self.options.retry_wait_max,
                                       wait_jitter=self.options.retry_wait_initial)
        except asyncio.CancelledError:
            self._submit_abandoned(job.key, "cancelled while the submit was in flight: a task "
                                            "may exist (and be billed)", fail_unsent=False)
            raise
        except Exception as exc:
            self._submit_ended(job.key, lane, exc, hook.failures)
        return None

    async def _wait_for_turn(self, lane: Lane, slot: SlotHolder) -> None:
        """Wait for a slot, the submit pace and the request gate; raise ``_Stopped`` if the
        run stopped submitting (or the provider said something fatal) meanwhile."""
        def check() -> None:
            if self.stopping or lane.fatal:
                raise _Stopped
        check()
        await slot.acquire()
        check()
        await lane.pace_submit()
        await lane.gate.wait()
        check()

    async def _send_submit(self, job: Job, lane: Lane, slot: SlotHolder) -> SubmitResult:
        """One submit request, its attempt committed to the journal before it leaves. A
        transient error puts the job back to pending, frees its slot, and tells the limits."""
        key = job.key
        # Every submit of this tick shares one durable commit; the request leaves after it.
        attempt_no = self.journal.mark_submitting(key, grouped=True)
        self._track(key, JobState.SUBMITTING, f"attempt {attempt_no}" if attempt_no > 1 else "")
        try:
            await self.journal.synced()
            result = await lane.provider.submit(job)
        except TransientError as exc:
            # The provider surely created nothing: back to pending, free the slot.
            self.journal.mark_submit_retry(key, str(exc))
            self._track(key, JobState.PENDING)
            slot.release()
            if isinstance(exc, ConcurrencyLimited):
                lane.slots.on_limited(concurrency=True)
            elif isinstance(exc, RateLimited):
                lane.slots.on_limited(concurrency=False)
                lane.gate.pause(exc.retry_after if exc.retry_after is not None else 1.0)
            raise
        lane.slots.on_success()
        final = result.final
        if _answered(result):
            assert final is not None
            self.journal.mark_submitted(
                key, result.task_id, estimated_seconds=result.estimated_seconds,
                ended=str(final.state), provider_status=final.provider_status,
                outputs=_output_rows(final.outputs), cost_usd=final.cost_usd,
                credits=final.credits, error=final.error, grouped=True)
            return result
        self.journal.mark_submitted(key, result.task_id,
                                    estimated_seconds=result.estimated_seconds, grouped=True)
        self._track(key, JobState.SUBMITTED)
        return result

    def _submit_ended(self, key: str, lane: Lane, exc: Exception, failures: int) -> None:
        """Classify why a submit gave up: what the job becomes and what the budget keeps."""
        if isinstance(exc, _Stopped):
            self.budget.release(key)
        elif isinstance(exc, TransientError):
            self.budget.release(key)
            self._fail(key, f"submit failed {failures} times, last: {exc}")
        elif isinstance(exc, JobRejected):
            self.budget.release(key)
            self._fail(key, f"rejected: {exc}")
        elif isinstance(exc, UnknownOutcome):
            self.budget.keep(key)
            self.journal.mark_unknown(key, str(exc))
            self._track(key, JobState.UNKNOWN, str(exc))
        elif isinstance(exc, FatalProviderError):
            # Credentials or balance refused: the provider created nothing.
            self.budget.release(key)
            self.journal.mark_submit_retry(key, str(exc))
            self._track(key, JobState.PENDING)
            self._on_fatal(lane, exc)
        else:  # a bug or an unexpected error: never resend blindly
            self._submit_abandoned(key, f"unexpected error during submit "
                                        f"({type(exc).__name__}: {exc})")

    def _submit_abandoned(self, key: str, reason: str, *, fail_unsent: bool = True) -> None:
        """A submit ended abnormally: unknown if its request may have left; otherwise the
        job fails (``fail_unsent``) or stays pending."""
        if self._state.get(key) is JobState.SUBMITTING:
            self.budget.keep(key)
            self.journal.mark_unknown(key, reason)
            self._track(key, JobState.UNKNOWN, reason)
        else:
            self.budget.release(key)
            if fail_unsent and self._state.get(key) is JobState.PENDING:
                self._fail(key, reason)

    def _fail(self, key: str, error: str, **kw: Any) -> None:
        self.journal.mark_failed(key, error, **kw)
        self._track(key, JobState.FAILED, error)

    async def _poll(self, lane: Lane, task_id: str) -> TaskStatus:
        """One poll, retried (polls are safe to repeat) on transient errors and lost answers."""

        def retry(exc: Exception) -> bool | float:
            if isinstance(exc, RateLimited):
                lane.slots.on_limited(concurrency=False)
                lane.gate.pause(exc.retry_after if exc.retry_after is not None else 1.0)
                return exc.retry_after if exc.retry_after is not None else True
            if isinstance(exc, TransientError | UnknownOutcome):
                return exc.retry_after if exc.retry_after is not None else True
            return False

        async def once() -> TaskStatus:
            await lane.gate.wait()
            return await lane.provider.poll(task_id)

        return await call_retrying(once, on=retry, attempts=self.options.poll_attempts,
                                   wait_initial=self.options.retry_wait_initial,
                                   wait_max=self.options.retry_wait_max,
                                   wait_jitter=self.options.retry_wait_initial)

    async def _follow(self, job: Job, lane: Lane, slot: SlotHolder, task_id: str, t0: float,
                      announced: float | None, *, learn: bool,
                      first_delay: float | None = None) -> TaskStatus | None:
        """Poll until the task ends; releases the job's slot as soon as it does.

        Returns the final status, or None when the task is left for ``resume`` (fatal error,
        too many failed polls, too long) or the job already ended (rejected)."""
        key = job.key
        loop = asyncio.get_running_loop()
        model = self.latency.model(job.provider, job.model)
        probe = False
        push = self._push.get(job.provider)
        # While the host may push the task's end, polls wait for it — at least until the
        # task overstays what it should take (then the polling schedule takes over).
        if push is not None:
            self._followed[(job.provider, task_id)] = job.name
        if push is not None and push.pushing(task_id):
            delay = model.first_delay(announced) if first_delay is None else first_delay
        elif first_delay is None and not model.learned and not (announced and announced > 0):
            probe = await self._await_probe(model, t0)
            delay = max(0.0, model.first_delay(announced) - (loop.time() - t0))
        else:
            delay = model.first_delay(announced) if first_delay is None else first_delay
        not_done = 0
        not_done_at: float | None = None
        try:
            while True:
                turn = await self._await_turn(push, task_id, delay, model, t0, announced,
                                              probe=probe)
                pushed = turn is _Turn.PUSHED
                probe = probe or turn is _Turn.PROBE
                if loop.time() - t0 > self.options.task_timeout:
                    msg = (f"task {task_id} still not finished after "
                           f"{self.options.task_timeout:.0f} s; left for resume")
                    self.journal.note("timeout", {"task_id": task_id}, key)
                    self.notes.append(f"{job.name}: {msg}")
                    return None
                sent = loop.time() - t0
                try:
                    status = await self._poll(lane, task_id)
                except FatalProviderError as exc:
                    self._on_fatal(lane, exc)
                    return None
                except JobRejected as exc:
                    self._fail(key, f"poll refused: {exc}")
                    return None
                except (TransientError, UnknownOutcome) as exc:
                    msg = f"task {task_id}: polls keep failing ({exc}); left for resume"
                    self.journal.note("poll_failed", {"task_id": task_id, "error": str(exc)},
                                      key)
                    self.notes.append(f"{job.name}: {msg}")
                    return None
                got = loop.time() - t0
                if not status.state.terminal:
                    new = JobState.RUNNING if status.state is TaskState.RUNNING else None
                    cur = self._state.get(key)
                    if new is not None and cur is JobState.RUNNING:
                        new = None
                    self.journal.record_poll(key, task_state=str(status.state),
                                             provider_status=status.provider_status,
                                             state=new, elapsed_seconds=status.elapsed_seconds)
                    if new is not None:
                        self._track(key, new)
                    if pushed and push is not None:
                        push.forget(task_id)  # the pushed end is not confirmed: poll on
                    not_done += 1
                    not_done_at = sent
                    delay = model.next_delay(got, not_done, announced)
                    continue
                self.journal.record_poll(key, task_state=str(status.state),
                                         provider_status=status.provider_status,
                                         elapsed_seconds=status.elapsed_seconds)
                slot.release()
                if status.state is TaskState.SUCCEEDED and learn:
                    model.observe(done_by=got, not_done_at=not_done_at,
                                  reported=status.elapsed_seconds, announced=announced)
                return status
        finally:
            slot.release()
            if probe:
                model.probe_ended()
            if push is not None:
                push.forget(task_id)
                self._task_progress(job.provider, task_id, None)
                self._followed.pop((job.provider, task_id), None)

    @staticmethod
    async def _await_turn(push: CompletionPush | None, task_id: str, delay: float,
                          model: LatencyModel, t0: float, announced: float | None, *,
                          probe: bool) -> _Turn:
        """Wait ``delay`` seconds before the next poll; while the host may push the task's
        end, wait for that push instead, until the later of then and the *silence* deadline
        (``LatencyModel.push_silence``, from the submit's answer at ``t0``). Past it with
        nothing learnt, only the model's probes poll (``probe``: this task is one already);
        the other tasks keep waiting for their push, or for a probe's place."""
        loop = asyncio.get_running_loop()
        plain_at = loop.time() + delay
        blind = not (announced and announced > 0)
        while push is not None and push.pushing(task_id):
            now = loop.time()
            silence_at = t0 + model.push_silence(announced)  # moves once something is learnt
            for_place = not probe and blind and not model.learned and now >= silence_at
            if for_place:
                if model.may_probe(now, now - silence_at):
                    model.start_probe(now)
                    return _Turn.PROBE
                until = max(silence_at + model.settings.probe_patience, model.next_chance(now))
            else:
                until = max(plain_at, silence_at)
            if until <= now:
                return _Turn.POLL
            if not for_place:
                if await push.await_completion(task_id, until - now):
                    return _Turn.PUSHED
                continue
            # Waiting for a probe's place: a lesson (or a probe's end) cuts this wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until) as deadline:
                    def wake(deadline: asyncio.Timeout = deadline) -> None:
                        deadline.reschedule(loop.time())
                    model.listen(wake)
                    try:
                        if await push.await_completion(task_id, until - now):
                            return _Turn.PUSHED
                    finally:
                        model.unlisten(wake)
        remaining = plain_at - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return _Turn.POLL

    async def _await_probe(self, model: LatencyModel, t0: float) -> bool:
        """Nothing is learnt about this model yet: become one of its probes (True), or wait
        for a probe's lesson (False; see ``LatencyModel.may_probe``)."""
        loop = asyncio.get_running_loop()
        patience = model.settings.probe_patience
        while not model.learned:
            now = loop.time()
            if model.may_probe(now, now - t0):
                model.start_probe(now)
                return True
            if now - t0 > self.options.task_timeout:
                break
            wake = max(t0 + patience, model.next_chance(now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):  # no task per waiting job
                    await model.news().wait()
        return False

    async def _finish(self, job: Job, lane: Lane, status: TaskStatus, *,
                      journaled: bool = False) -> None:
        """A task's end: settle its cost, journal it (unless the submit's answer already was
        — ``journaled``), download a success's outputs."""
        key = job.key
        if status.state is TaskState.CANCELLED:
            self.budget.settle(key, status.cost_usd or 0.0, status.credits or 0.0)
            if not journaled:
                self.journal.mark_cancelled(key, status.error or "cancelled by the provider")
            self._track(key, JobState.CANCELLED)
            return
        if status.state is TaskState.FAILED:
            # Failed tasks cost nothing unless the provider billed them.
            self.budget.settle(key, status.cost_usd or 0.0, status.credits or 0.0)
            error = f"task failed: {status.error or status.provider_status}"
            if journaled:
                self._track(key, JobState.FAILED, error)
            else:
                self._fail(key, error, task_state="failed", cost_usd=status.cost_usd,
                           credits=status.credits)
            return
        usd = status.cost_usd if status.cost_usd is not None else job.estimate.usd
        credits = status.credits if status.credits is not None else job.estimate.credits
        self.budget.settle(key, usd, credits)
        if not journaled:
            self.journal.mark_downloading(key, _output_rows(status.outputs),
                                          cost_usd=status.cost_usd, credits=status.credits)
        self._track(key, JobState.DOWNLOADING)
        await self._download_all(job, lane, status.outputs)

    async def _download_all(self, job: Job, lane: Lane,
                            outputs: Sequence[RemoteOutput]) -> None:
        key = job.key
        if not outputs:
            self._fail(key, "the provider reported success but listed no outputs",
                       task_state=TASK_SUCCEEDED)
            return
        done = {o.index for o in self.journal.outputs(key)
                if (self.run_dir / o.path).is_file()} if key in self._recorded else set()
        names = self.output_names.get(key, {})
        assert self._download_sem is not None
        for index, remote in enumerate(outputs):
            if index in done:
                continue

            def final_for(ext: str, index: int = index) -> Path:
                rel = f"{OUTPUTS_DIR}/{output_name_for(names, index, ext)}"
                owner = self._claimed.setdefault(rel, key)
                if owner != key:
                    other = self.jobs[owner].name if owner in self.jobs else owner
                    raise DownloadError(f"output name {rel} is already used by job {other!r}; "
                                        f"make output.filename unique per job",
                                        retryable=False)
                return self.run_dir / rel

            try:
                async with self._download_sem:
                    got = await download(lane.provider, remote, final_for,
                                         attempts=self.options.download_attempts,
                                         backoff=self.options.download_backoff)
            except DownloadError as exc:
                self._fail(key, f"output {index}: {exc}", task_state=TASK_SUCCEEDED)
                return
            rel = got.path.relative_to(self.run_dir).as_posix()
            self.journal.record_output(OutputRecord(key, index, rel, remote.url, got.bytes,
                                                    got.sha256, got.content_type, got.width,
                                                    got.height))
            self._recorded.add(key)
        self.journal.mark_succeeded(key)
        self._track(key, JobState.SUCCEEDED)
        if self.on_succeeded is not None:
            try:
                self.on_succeeded(key)
            except Exception as exc:  # a hook never fails the job it reports
                self.notes.append(f"{job.name}: after download: {type(exc).__name__}: {exc}")

    # -- resume: follow tasks that exist ----------------------------------------------------

    async def _reattach(self, rec: JobRecord) -> None:
        job = self.jobs[rec.key]
        lane = self.lanes[job.provider]
        assert rec.task_id is not None
        if rec.answered_at_submit and rec.state in (JobState.DOWNLOADING, JobState.FAILED):
            # A synchronous host's answer: no task to ask again; its links were journaled.
            outputs = tuple(RemoteOutput(url=str(o.get("url")), name=o.get("name"),
                                         content_type=o.get("content_type"), size=o.get("size"))
                            for o in rec.remote_outputs)
            if rec.state is JobState.FAILED:
                self.journal.mark_downloading(rec.key, list(rec.remote_outputs),
                                              cost_usd=rec.cost_usd, credits=rec.credits)
            self._track(rec.key, JobState.DOWNLOADING)
            await self._download_all(job, lane, outputs)
            return
        if rec.state is JobState.DOWNLOADING or rec.state is JobState.FAILED:
            # The task finished (and was paid): poll once for fresh output links.
            try:
                status = await self._poll(lane, rec.task_id)
            except ProviderError as exc:
                self.notes.append(f"{job.name}: could not re-read task {rec.task_id}: {exc}")
                if isinstance(exc, FatalProviderError):
                    self._on_fatal(lane, exc)
                return
            if status.state is not TaskState.SUCCEEDED:
                self._fail(rec.key, f"task {rec.task_id} now reports {status.state}")
                return
            self.journal.mark_downloading(
                rec.key, _output_rows(status.outputs),
                cost_usd=status.cost_usd if status.cost_usd is not None else rec.cost_usd,
                credits=status.credits if status.credits is not None else rec.credits)
            self._track(rec.key, JobState.DOWNLOADING)
            await self._download_all(job, lane, status.outputs)
            return
        # Still in flight remotely: it holds one of the provider's slots already.
        slot = SlotHolder(lane.slots, held=False)
        slot.take_now()
        self.budget.reserve(job)
        age = _wall_age(rec.submitted_at)
        t0 = asyncio.get_running_loop().time() - age
        model = self.latency.model(job.provider, job.model)
        first = max(0.0, model.first_delay(rec.estimated_seconds) - age)
        followed: TaskStatus | None = None
        try:
            followed = await self._follow(job, lane, slot, rec.task_id, t0,
                                          rec.estimated_seconds, learn=False,
                                          first_delay=first)
            if followed is None:
                self._left_in_flight(rec.key)
        finally:
            slot.release()
        if followed is not None:
            await self._finish(job, lane, followed)

    # -- cancel -----------------------------------------------------------------------------

    async def _watch_cancel_requests(self) -> None:
        while True:
            await asyncio.sleep(self.options.cancel_check_interval)
            try:
                requested = self.journal.get_meta("cancel_requested")
            except Exception:
                continue
            if requested and not self._cancelling:
                self.journal.note("cancel_request_seen", {"requested": requested})
                self.cancel_all("requested with seedbatch cancel")
                return

    async def _cancel_everything(self, why: str) -> None:
        for task in self._dispatchers:
            task.cancel()
        me = asyncio.current_task()
        # A submit in flight to a host that cannot stop a task is not cut: closing the call
        # would not stop what it started (a synchronous host's generation runs on, billed),
        # so it runs to its answer and its outputs are downloaded, like any task that runs on.
        calls_run_on = sorted(key for key, task in self._task_of.items()
                              if task is not me and not task.done() and self._runs_on(key))
        kept = {self._task_of[key] for key in calls_run_on}
        tasks = [t for t in self._tasks if t is not me and t not in kept]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self._dispatchers, *tasks, return_exceptions=True)
        report = await cancel_remote_tasks(
            self.journal, {n: lane.provider for n, lane in self.lanes.items()},
            gates={n: lane.gate for n, lane in self.lanes.items()},
            limit_seconds=self.options.cancel_timeout,
            on_cancelled=lambda key: self._track(key, JobState.CANCELLED), why=why)
        for key in calls_run_on:
            if key not in report.running_on:
                self.journal.note(RAN_ON_EVENT, {"error": "its submit was in flight and the host "
                                                 "cannot stop what it started", "why": why}, key)
                report.running_on.append(key)
        self.cancel_report = report
        # Tasks that could not be stopped run on and are billed: follow and download them.
        attached = set(report.attached)
        keep = [rec for rec in self.journal.jobs()
                if rec.key in attached and rec.state.attached and rec.task_id
                and rec.key in self.jobs and rec.key not in calls_run_on]
        if not keep and not calls_run_on:
            return
        self._awaited_after_cancel = [*calls_run_on, *(rec.key for rec in keep)]
        running_on = len(set(report.running_on) & set(self._awaited_after_cancel))
        what = (f"{running_on} task{'s' if running_on != 1 else ''} cannot be cancelled "
                f"(they run on and are billed)") if running_on else ""
        refused = len(self._awaited_after_cancel) - running_on
        if refused:
            what += (", and " if what else "") + \
                f"{refused} cancel{'s were' if refused != 1 else ' was'} refused"
        n = len(self._awaited_after_cancel)
        self.progress.notice(f"{what}: waiting for {'them' if n != 1 else 'it'} to finish and "
                             f"download (Ctrl-C again to leave {'them' if n != 1 else 'it'} "
                             f"for `seedbatch resume`).")
        for rec in keep:
            self._spawn(rec.key, self._reattach(rec))

    def _runs_on(self, key: str) -> bool:
        """``key``'s submit is in flight to a host that cannot stop a task once started
        (its client's ``can_cancel`` is False)."""
        job = self.jobs.get(key)
        lane = self.lanes.get(job.provider) if job is not None else None
        return (lane is not None and self._state.get(key) is JobState.SUBMITTING
                and getattr(lane.provider, "can_cancel", True) is False)
