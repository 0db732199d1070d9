"""The executor's scheduling and bookkeeping, against the in-memory fake provider."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from execute_fakes import FakeProvider, image_bytes, make_job
from execute_support import FAST, Harness, until

from runner.errors import AuthError, InsufficientBalance, JobRejected, RateLimited, ServerError
from runner.execute.journal import TASK_SUCCEEDED, JobState
from runner.execute.policy import LatencyModel
from runner.execute.progress import LogProgress
from runner.jobs import Budget
from runner.outputs import ReusedOutput, ReuseHit

pytestmark = pytest.mark.anyio


def jobs_named(prefix: str, n: int, **kw: object) -> list:
    return [make_job(f"{prefix}{i}", **kw) for i in range(n)]  # type: ignore[arg-type]


async def test_every_job_is_submitted_once_followed_and_downloaded(harness: Harness) -> None:
    jobs = jobs_named("j", 12)
    fake = FakeProvider(latency=0.05)
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=3)
    journal = ex.journal
    assert out.counts["succeeded"] == 12
    assert out.images == 12
    assert all(n == 1 for n in fake.created.values())
    assert len(fake.created) == 12
    assert ex.lanes["wiro"].slots.peak == 3  # the in-flight cap, measured
    assert fake.peak_remote <= 3
    for rec in journal.jobs():
        assert rec.attempts == 1
        assert rec.polls >= 1
        assert rec.task_id is not None
        assert rec.submitted_at
        assert rec.finished_at
        (o,) = journal.outputs(rec.key)
        path = harness.tmp / "run" / o.path
        assert o.path == f"outputs/{rec.name}/0.png"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == o.sha256
    assert out.spent_usd == pytest.approx(12 * 0.03)
    assert fake.requests_sent["poll"] == sum(r.polls for r in journal.jobs())


async def test_a_provider_limit_below_ours_is_waited_out_not_failed(harness: Harness) -> None:
    jobs = jobs_named("j", 10)
    fake = FakeProvider(latency=0.05, concurrency=2)  # code 96 beyond 2 tasks
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=6)
    assert out.counts["succeeded"] == 10
    assert fake.rejected_96 > 0
    assert ex.lanes["wiro"].slots.lowered > 0
    assert fake.peak_remote <= 2
    assert sum(fake.created.values()) == 10
    retries = [e for e in ex.journal.events(kind="retry")]
    assert retries
    assert all("concurrent" in e.detail["error"] for e in retries)


async def test_transient_submit_errors_are_retried_without_double_tasks(
        harness: Harness) -> None:
    jobs = jobs_named("j", 4)
    fake = FakeProvider(latency=0.03)
    fake.script("submit", ServerError("HTTP 503"), RateLimited("HTTP 429", retry_after=0.05),
                ServerError("HTTP 502"))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=1)
    assert out.counts["succeeded"] == 4
    assert sum(fake.created.values()) == 4
    assert sum(r.attempts for r in ex.journal.jobs()) == 4 + 3
    assert fake.requests_sent["submit"] == 7


async def test_a_submit_that_keeps_failing_fails_the_job_after_its_budget(
        harness: Harness) -> None:
    jobs = jobs_named("j", 1)
    fake = FakeProvider(latency=0.02)
    fake.script("submit", *[ServerError("HTTP 500")] * 7)
    opts = replace(FAST, submit_failures=5)
    ex, _out = await harness.run(jobs, {"wiro": fake}, concurrency=1, options=opts)
    (rec,) = ex.journal.jobs()
    assert rec.state is JobState.FAILED
    assert "submit failed 6 times, last: HTTP 500" in (rec.error or "")
    assert rec.attempts == 6
    assert not fake.created


async def test_an_unknown_outcome_is_recorded_and_never_resent(harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=0.02)
    fake.script("submit", "lost")  # the first submit creates a task, then the answer is lost
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=1)
    rec = ex.journal.job(jobs[0].key)
    assert rec.state is JobState.UNKNOWN
    assert "answer lost" in (rec.error or "")
    assert rec.attempts == 1
    assert fake.created[jobs[0].key] == 1  # exactly the one lost, never a second
    assert out.counts["succeeded"] == 2
    assert out.counts["unknown"] == 1


async def test_a_rejected_job_fails_at_once(harness: Harness) -> None:
    jobs = jobs_named("j", 2)
    fake = FakeProvider(latency=0.02)
    fake.script("submit", JobRejected("size 1x1 is not allowed", code=0))
    ex, _ = await harness.run(jobs, {"wiro": fake}, concurrency=1)
    rec = ex.journal.job(jobs[0].key)
    assert rec.state is JobState.FAILED
    assert rec.attempts == 1
    assert "size 1x1" in (rec.error or "")


async def test_a_failed_task_fails_its_job_and_costs_nothing(harness: Harness) -> None:
    jobs = [make_job("ok"), make_job("boom", prompt="explode")]
    fake = FakeProvider(latency=0.03, fail_prompts={"explode"})
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=2)
    rec = ex.journal.job(jobs[1].key)
    assert rec.state is JobState.FAILED
    assert rec.task_state == "failed"
    assert "model crashed" in (rec.error or "")
    assert out.spent_usd == pytest.approx(0.03)


async def test_a_fatal_error_stops_submits_but_in_flight_tasks_finish(
        harness: Harness) -> None:
    wiro_jobs = jobs_named("w", 6)
    pix_jobs = jobs_named("p", 3, provider="pixwith", model="pixwith/seedream-4.5", usd=0.0,
                          credits=6)
    wiro = FakeProvider("wiro", latency=0.15)
    pix = FakeProvider("pixwith", latency=0.15, cost_usd=None, credits=6)
    # Two wiro submits go through, the third meets an empty balance.
    wiro.script("submit", None, None, InsufficientBalance("insufficient balance", code=97))
    ex, out = await harness.run(wiro_jobs + pix_jobs, {"wiro": wiro, "pixwith": pix},
                                concurrency={"wiro": 3, "pixwith": 1})
    assert [str(f) for f in out.fatal] == ["insufficient balance (code 97)"]
    states = {r.name: r.state for r in ex.journal.jobs()}
    assert states["w0"] is JobState.SUCCEEDED
    assert states["w1"] is JobState.SUCCEEDED
    assert all(states[f"w{i}"] is JobState.PENDING for i in range(2, 6))
    assert states["p0"] is JobState.SUCCEEDED  # already in flight elsewhere: it finished
    assert wiro.requests_sent["submit"] == 3
    assert sum(pix.created.values()) < 3  # no submits anywhere once it stopped
    assert ex.journal.events(kind="fatal")


async def test_an_auth_error_while_polling_stops_the_run_and_leaves_the_task(
        harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=0.05)
    fake.script("poll", AuthError("bad signature", http_status=401))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=1)
    assert out.fatal
    first = ex.journal.job(jobs[0].key)
    assert first.state is JobState.SUBMITTED  # left attached: resume follows it
    assert first.task_id is not None
    assert ex.journal.job(jobs[1].key).state is JobState.PENDING


async def test_transient_poll_errors_are_retried(harness: Harness) -> None:
    jobs = jobs_named("j", 2)
    fake = FakeProvider(latency=0.03)
    fake.script("poll", ServerError("HTTP 502"), ServerError("reset"),
                RateLimited("HTTP 429", retry_after=0.02))
    _ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=2)
    assert out.counts["succeeded"] == 2


async def test_budget_caps_what_is_submitted_and_the_rest_stays_pending(
        harness: Harness) -> None:
    jobs = jobs_named("j", 6, usd=0.03)
    fake = FakeProvider(latency=0.03, cost_usd=0.03)
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=4,
                                budget=Budget(max_usd=0.10))
    assert out.counts["succeeded"] == 3
    assert out.counts["pending"] == 3
    assert out.budget_held == 3
    assert out.spent_usd <= 0.10
    assert sum(fake.created.values()) == 3
    held = [r for r in ex.journal.jobs() if r.state is JobState.PENDING]
    assert all((r.reason or "").startswith("budget:") for r in held)


async def test_failed_tasks_free_their_budget(harness: Harness) -> None:
    jobs = [make_job(f"j{i}", prompt="explode" if i < 2 else None, index=i) for i in range(5)]
    fake = FakeProvider(latency=0.03, fail_prompts={"explode"})
    _ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=2,
                                budget=Budget(max_usd=0.07))
    # Two failures cost nothing, so two of the three others still fit in $0.07.
    assert out.counts["failed"] == 2
    assert out.counts["succeeded"] == 2
    assert out.counts["pending"] == 1


async def test_credits_budget(harness: Harness) -> None:
    jobs = jobs_named("p", 4, provider="pixwith", model="pixwith/seedream-4.5", usd=0.0,
                      credits=6)
    fake = FakeProvider("pixwith", latency=0.02, cost_usd=None, credits=6)
    _, out = await harness.run(jobs, {"pixwith": fake}, concurrency=4,
                               budget=Budget(max_credits=12))
    assert out.counts["succeeded"] == 2
    assert out.spent_credits == 12


async def test_first_interrupt_stops_submits_and_lets_in_flight_finish(
        harness: Harness) -> None:
    jobs = jobs_named("j", 6)
    fake = FakeProvider(latency=0.2)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=2)
    run = asyncio.create_task(ex.run())
    await until(lambda: sum(fake.created.values()) >= 2)
    ex.interrupt()
    out = await run
    assert out.interrupted
    assert not out.cancelled
    assert out.counts["succeeded"] == 2
    assert out.counts["pending"] == 4
    assert sum(fake.created.values()) == 2
    assert ex.journal.events(kind="interrupt")


async def test_second_interrupt_cancels_remote_tasks(harness: Harness) -> None:
    jobs = jobs_named("j", 5)
    fake = FakeProvider(latency=5.0)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=2)
    run = asyncio.create_task(ex.run())
    await until(lambda: sum(1 for r in ex.journal.jobs() if r.state is JobState.SUBMITTED) >= 2)
    ex.interrupt()
    ex.interrupt()
    out = await asyncio.wait_for(run, 5)
    assert out.cancelled
    assert out.interrupted
    assert len(fake.cancels) == 2
    assert out.counts["cancelled"] == 2
    assert out.counts["pending"] == 3
    assert all(t.cancelled for t in fake.tasks.values())


async def test_a_cancel_request_in_the_journal_cancels_the_run(harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=5.0)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=3)
    run = asyncio.create_task(ex.run())
    await until(lambda: sum(fake.created.values()) >= 3)
    ex.journal.set_meta("cancel_requested", "now")
    out = await asyncio.wait_for(run, 5)
    assert out.cancelled
    assert out.counts["cancelled"] == 3


async def test_a_refused_cancel_keeps_the_job_attached_and_downloads_it(
        harness: Harness) -> None:
    # The cancel is refused (the task has probably just finished): nothing paid is lost —
    # the cancelling process follows the task and downloads its outputs.
    jobs = jobs_named("j", 1)
    fake = FakeProvider(latency=60.0)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=1)
    run = asyncio.create_task(ex.run())
    await until(lambda: bool(fake.created))
    fake.script("cancel", JobRejected("task is not in a cancellable state"))
    ex.cancel_all("test")
    await until(lambda: bool(ex.journal.events(kind="cancel_failed")))
    for task in fake.tasks.values():
        task.duration = 0.0  # it finishes now
    out = await asyncio.wait_for(run, 30)
    assert out.cancelled
    assert out.counts["cancelled"] == 0
    assert ex.journal.job(jobs[0].key).state is JobState.SUCCEEDED
    assert len(ex.journal.outputs(jobs[0].key)) == 1
    assert ex.journal.events(kind="cancel_failed")
    assert out.left_attached == 0


async def test_a_task_the_host_cannot_stop_runs_on_is_billed_and_downloaded(
        harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=60.0, cannot_cancel=True, cost_usd=0.03)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=2)
    run = asyncio.create_task(ex.run())
    await until(lambda: len(fake.created) == 2)
    ex.cancel_all("test")
    await until(lambda: len(ex.journal.events(kind="cancel_unsupported")) == 2)
    for task in fake.tasks.values():
        task.duration = 0.0  # they run on to their end
    out = await asyncio.wait_for(run, 30)
    states = {r.name: r.state for r in ex.journal.jobs()}
    # Never marked cancelled: the two submitted tasks ran on, were billed and downloaded;
    # the third was never sent and stays pending.
    assert sorted(states.values()) == [JobState.PENDING, JobState.SUCCEEDED, JobState.SUCCEEDED]
    assert out.running_on == 2
    assert out.counts["cancelled"] == 0
    assert sum(fake.billed.values()) == 2 == len(ex.journal.outputs())
    assert out.spent_usd == pytest.approx(0.06)
    ran_on = {e.job_key for e in ex.journal.events(kind="cancel_unsupported")}
    assert ran_on == {key for key in fake.created}


async def test_ctrl_c_while_waiting_for_uncancellable_tasks_leaves_them_for_resume(
        harness: Harness) -> None:
    jobs = jobs_named("j", 1)
    fake = FakeProvider(latency=60.0, cannot_cancel=True)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=1)
    run = asyncio.create_task(ex.run())
    await until(lambda: bool(fake.created))
    ex.interrupt()
    ex.interrupt()  # cancel: the host cannot stop it, so the run waits for it
    await until(lambda: bool(ex.journal.events(kind="cancel_unsupported")))
    ex.interrupt()  # leave it
    out = await asyncio.wait_for(run, 30)
    rec = ex.journal.job(jobs[0].key)
    assert rec.state.attached
    assert rec.task_id is not None
    assert out.left_attached == 1
    assert out.running_on == 1
    # resume (a new executor on the same journal) downloads it once the task is done
    fake.tasks[rec.task_id].duration = 0.0
    again = harness.executor(jobs, {"wiro": fake}, run_dir=harness.tmp / "run",
                             journal=ex.journal)
    await asyncio.wait_for(again.run(), 30)
    assert ex.journal.job(jobs[0].key).state is JobState.SUCCEEDED
    assert fake.created[jobs[0].key] == 1  # never submitted twice


async def test_resume_reattaches_marks_unknown_and_submits_pending(harness: Harness) -> None:
    jobs = jobs_named("j", 4)
    fake = FakeProvider(latency=0.05)
    first = harness.executor(jobs, {"wiro": fake}, concurrency=1)
    journal = first.journal
    # As a killed process leaves it: j0 has a task, j1 was mid-submit, j2/j3 never sent.
    journal.mark_submitting(jobs[0].key)
    task = await fake.submit(jobs[0])
    journal.mark_submitted(jobs[0].key, task.task_id)
    journal.mark_submitting(jobs[1].key)
    resumed = harness.executor(jobs, {"wiro": fake}, concurrency=2,
                               run_dir=harness.tmp / "run", journal=journal)
    out = await resumed.run()
    states = {r.name: r.state for r in journal.jobs()}
    assert states == {"j0": JobState.SUCCEEDED, "j1": JobState.UNKNOWN,
                      "j2": JobState.SUCCEEDED, "j3": JobState.SUCCEEDED}
    assert fake.created[jobs[0].key] == 1  # re-attached, not resubmitted
    assert jobs[1].key not in fake.created  # unknown: never sent again
    assert "submit was in flight" in (journal.job(jobs[1].key).error or "")
    assert out.counts["unknown"] == 1
    # --retry-unknown: the user accepts the risk, it is sent.
    again = harness.executor(jobs, {"wiro": fake}, run_dir=harness.tmp / "run",
                             journal=journal, options=replace(FAST, retry_unknown=True))
    out = await again.run()
    assert out.counts["succeeded"] == 4
    assert fake.created[jobs[1].key] == 1
    assert journal.job(jobs[1].key).attempts == 2


async def test_a_paid_output_whose_download_failed_is_fetched_on_resume(
        harness: Harness) -> None:
    jobs = jobs_named("j", 1)
    fake = FakeProvider(latency=0.02)
    fake.script("download", *[JobRejected("HTTP 404")])
    ex, out = await harness.run(jobs, {"wiro": fake})
    rec = ex.journal.job(jobs[0].key)
    assert rec.state is JobState.FAILED
    assert rec.task_state == "succeeded"
    assert "output 0" in (rec.error or "")
    again = harness.executor(jobs, {"wiro": fake}, run_dir=harness.tmp / "run",
                             journal=ex.journal)
    out = await again.run()
    assert out.counts["succeeded"] == 1
    assert fake.requests_sent["submit"] == 1


async def test_reused_outputs_are_placed_without_calling_the_provider(
        harness: Harness) -> None:
    jobs = jobs_named("j", 2)
    fake = FakeProvider(latency=0.02)
    old = harness.tmp / "old.png"
    data = image_bytes("PNG", (3, 3))
    old.write_bytes(data)

    def lookup(job: object) -> ReuseHit | None:
        if job is jobs[0]:
            return ReuseHit("runs/earlier", (ReusedOutput(old, 0, len(data),
                                                          hashlib.sha256(data).hexdigest(),
                                                          "image/png", 3, 3),))
        return None

    ex, out = await harness.run(jobs, {"wiro": fake}, reuse=lookup)
    assert out.counts["reused"] == 1
    assert out.counts["succeeded"] == 1
    assert jobs[0].key not in fake.created
    (o,) = ex.journal.outputs(jobs[0].key)
    assert (harness.tmp / "run" / o.path).read_bytes() == data
    assert ex.journal.job(jobs[0].key).reason == "reused from runs/earlier"


async def test_requests_per_minute_hold_for_every_kind_of_call(harness: Harness) -> None:
    jobs = jobs_named("j", 8)
    fake = FakeProvider(latency=0.01)
    rpm = 1200.0  # 20/s: a burst of 20, then 19.67/s
    _, out = await harness.run(jobs, {"wiro": fake}, concurrency=8, rpm=rpm)
    assert out.counts["succeeded"] == 8
    times = sorted(t for kind, t in fake.calls if kind in ("submit", "poll", "cancel"))
    burst, per_s = 20, (rpm - 20) / 60
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t < start + 0.5)
        assert inside <= burst + 0.5 * per_s + 1


async def test_two_jobs_may_not_write_the_same_output(harness: Harness) -> None:
    jobs = jobs_named("j", 2)
    fake = FakeProvider(latency=0.02)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=1)
    same = ex.output_names[jobs[0].key]
    ex.output_names = {jobs[0].key: same, jobs[1].key: same}
    out = await ex.run()
    assert out.counts["succeeded"] == 1
    bad = ex.journal.job(jobs[1].key)
    assert bad.state is JobState.FAILED
    assert "already used by job 'j0'" in (bad.error or "")


async def test_plain_progress_lines_name_jobs_and_notable_states(harness: Harness) -> None:
    import io

    stream = io.StringIO()
    jobs = [make_job("good"), make_job("bad", prompt="explode")]
    fake = FakeProvider(latency=0.02, fail_prompts={"explode"})
    ex = harness.executor(jobs, {"wiro": fake})
    ex.progress = LogProgress(stream)
    await ex.run()
    text = stream.getvalue()
    assert "2 jobs to run" in text
    assert "good: succeeded" in text
    assert "bad: failed — task failed: model crashed" in text
    assert "submitting" not in text


def test_outputs_dir_layout(tmp_path: Path) -> None:
    # names come from the plan's output namer; a name leaving outputs/ is refused
    from runner.errors import ManifestError
    from runner.rundir import output_name_for, safe_relative

    assert output_name_for({"0": {"png": "a/0.png"}}, 2, "png") == "a/0-2.png"
    with pytest.raises(ManifestError):
        safe_relative("../escape.png", "job")
    with pytest.raises(ManifestError):
        safe_relative("/abs.png", "job")


async def test_an_unexpected_error_ends_one_job_not_the_run(harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=0.02)
    fake.script("poll", ValueError("a bug"))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=1)
    assert out.counts["succeeded"] == 2
    first = ex.journal.job(jobs[0].key)
    assert first.state is JobState.SUBMITTED  # its task exists: resume follows it
    assert any("internal error (ValueError: a bug)" in n for n in out.notes)
    assert ex.journal.events(kind="internal_error")


async def test_one_task_probes_an_unknown_latency_and_the_others_wait_for_it(
        harness: Harness) -> None:
    jobs = jobs_named("j", 8)
    fake = FakeProvider(latency=0.4, elapsed_reported=False)
    # Patience far beyond the probe's time: the others wait for the lesson whatever the load
    # (what they do when it is late: the next test; how many polls a lesson saves: the
    # LatencyModel tests in test_policy.py, on exact numbers).
    opts = replace(FAST, poll=replace(FAST.poll, probe_patience=120.0))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=8, options=opts)
    assert out.counts["succeeded"] == 8
    # Journal event ids are in commit order. The probe is the task polled first; its first
    # poll (at 0.05 s) found a 0.4 s task unfinished; every other task's first poll comes
    # after the poll that saw the probe's task finished — none polled while it climbed.
    polls = ex.journal.events(kind="poll")
    probe = polls[0].job_key
    assert ex.journal.job(str(probe)).polls >= 2
    lesson = max(e.id for e in polls if e.job_key == probe)
    assert all(e.id > lesson for e in polls if e.job_key != probe)


async def test_without_a_probe_lesson_tasks_follow_their_own_schedule(
        harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    # The first task (the probe) is slow; the others must not wait for it for long.
    fake = FakeProvider(latency=0.1, slow_prompts={jobs[0].prompt: 1.0})
    opts = replace(FAST, poll=replace(FAST.poll, probe_patience=0.2))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=3, options=opts)
    assert out.counts["succeeded"] == 3
    recs = ex.journal.jobs()
    assert recs[0].polls > 1
    assert all(r.finished_at < recs[0].finished_at for r in recs[1:])  # type: ignore[operator]


async def test_probes_join_one_per_patience_while_the_lesson_is_late(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = jobs_named("j", 16)
    fake = FakeProvider(latency=0.6, elapsed_reported=False, slow_prompts={jobs[0].prompt: 3.0})
    patience = 0.15
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    lessons: list[float] = []
    real_start, real_observe = LatencyModel.start_probe, LatencyModel.observe

    def start(self: LatencyModel, now: float) -> None:
        starts.append(loop.time())
        real_start(self, now)

    def observe(self: LatencyModel, **kwargs: Any) -> float:
        lessons.append(loop.time())
        return real_observe(self, **kwargs)

    monkeypatch.setattr(LatencyModel, "start_probe", start)
    monkeypatch.setattr(LatencyModel, "observe", observe)
    opts = replace(FAST, poll=replace(FAST.poll, probe_patience=patience))
    ex, out = await harness.run(jobs, {"wiro": fake}, concurrency=16, options=opts)
    assert out.counts["succeeded"] == 16
    # No task can be seen done before 0.6 s, long after the first patience: a second probe
    # joined (a slow first probe does not hold the lesson back) — but only one per
    # patience since the first, not every task that waited that long.
    early = [t for t in starts if t < lessons[0]]
    assert len(early) >= 2
    assert len(early) <= 1 + (lessons[0] - starts[0]) / patience + 1e-6
    # The others waited for the lesson: no task but a probe polled before it.
    polls = ex.journal.events(kind="poll")
    lesson = min(e.id for e in polls if e.detail["task_state"] == TASK_SUCCEEDED)
    assert 1 <= len({e.job_key for e in polls if e.id < lesson}) <= len(early)


async def test_an_interrupt_does_not_wait_for_jobs_backing_off(harness: Harness) -> None:
    jobs = jobs_named("j", 3)
    fake = FakeProvider(latency=0.05)
    # Every submit is refused for being over a limit, with a long Retry-After.
    fake.script("submit", *[RateLimited("HTTP 429", retry_after=30.0)] * 3)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=3)
    loop = asyncio.get_running_loop()
    run = asyncio.create_task(ex.run())
    await until(lambda: fake.requests_sent["submit"] >= 1)
    await asyncio.sleep(0.05)
    t0 = loop.time()
    ex.interrupt()
    out = await asyncio.wait_for(run, 5)
    assert loop.time() - t0 < 1.0
    assert out.counts["pending"] == 3
    assert not fake.created


def test_submit_spacing_is_a_quarter_of_the_learnt_duration_per_slot(harness: Harness) -> None:
    ex = harness.executor(jobs_named("j", 1), {"wiro": FakeProvider()}, concurrency=4,
                          options=replace(FAST, submit_spacing=None, max_submit_spacing=0.05))
    lane = ex.lanes["wiro"]
    assert lane.spacing() == 0.0  # nothing learnt: no spacing
    model = ex.latency.model("wiro", "wiro/seedream-v4")
    for _ in range(5):
        model.observe(done_by=0.2, not_done_at=0.19, reported=0.2)
    assert lane.spacing() == pytest.approx(0.25 * 0.2 / 4)
    for _ in range(64):
        model.observe(done_by=10.0, not_done_at=9.9, reported=10.0)
    assert lane.spacing() == 0.05  # capped


async def test_jobs_waiting_for_their_submit_own_no_task(harness: Harness) -> None:
    """However many slots are free, at most ``submits_at_once`` jobs of a provider are
    between dispatch and their submit's end; the others are entries in a list."""
    jobs = jobs_named("j", 30)
    fake = FakeProvider(latency=0.05)
    ex = harness.executor(jobs, {"wiro": fake}, concurrency=30,
                          options=replace(FAST, submits_at_once=3))
    seen: list[tuple[int, int]] = []  # (submitting, tasks of jobs not yet submitted)

    class Watch(LogProgress):
        def job_state(self, name: str, state: str, detail: str = "") -> None:
            states = [ex._state[key] for key in ex._task_of]
            seen.append((sum(s is JobState.SUBMITTING for s in ex._state.values()),
                         sum(s in (JobState.PENDING, JobState.SUBMITTING) for s in states)))

    ex.progress = Watch()
    out = await ex.run()
    assert out.counts["succeeded"] == 30
    assert sum(fake.created.values()) == 30
    assert seen
    assert max(s for s, _ in seen) <= 3
    assert max(t for _, t in seen) <= 3
