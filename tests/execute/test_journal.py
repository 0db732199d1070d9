from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from execute_fakes import make_job

from runner.errors import RunDirError
from runner.execute.journal import SCHEMA_VERSION, JobState, Journal
from runner.outputs import OutputRecord


def _new(tmp_path: Path, n: int = 3, **kw: object) -> tuple[Journal, list]:
    jobs = [make_job(f"job-{i}") for i in range(n)]
    return Journal.create(tmp_path / "journal.sqlite", jobs, {"name": "t", "run_id": "r1"},
                          **kw), jobs  # type: ignore[arg-type]


def test_create_holds_every_job_in_plan_order_with_meta_and_wal(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path, skipped={})
    with journal:
        assert [r.name for r in journal.jobs()] == [j.name for j in jobs]
        assert all(r.state is JobState.PENDING and r.attempts == 0 for r in journal.jobs())
        meta = journal.meta()
        assert meta["schema_version"] == SCHEMA_VERSION
        assert meta["run_id"] == "r1"
        raw = sqlite3.connect(tmp_path / "journal.sqlite")
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        raw.close()
        assert journal.job(jobs[1].key).estimate_usd == pytest.approx(0.03)


def test_skipped_jobs_keep_their_reason(tmp_path: Path) -> None:
    jobs = [make_job("a"), make_job("b")]
    with Journal.create(tmp_path / "j.sqlite", jobs, {}, skipped={jobs[1].key: "--only a"}) as j:
        rec = j.job(jobs[1].key)
        assert rec.state is JobState.SKIPPED
        assert rec.reason == "--only a"
        assert j.counts()["skipped"] == 1
        assert j.counts()["pending"] == 1


def test_submitting_is_committed_before_the_call_and_visible_to_another_process(
        tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    with journal:
        assert journal.mark_submitting(jobs[0].key) == 1
        # A separate connection (as another process would) sees it at once.
        other = sqlite3.connect(tmp_path / "journal.sqlite")
        state, attempts = other.execute("SELECT state, attempts FROM jobs WHERE key = ?",
                                        (jobs[0].key,)).fetchone()
        assert (state, attempts) == ("submitting", 1)
        journal.mark_submit_retry(jobs[0].key, "HTTP 503")
        assert journal.mark_submitting(jobs[0].key) == 2
        journal.mark_submitted(jobs[0].key, "task-9", estimated_seconds=12.0)
        state, task_id = other.execute("SELECT state, task_id FROM jobs WHERE key = ?",
                                       (jobs[0].key,)).fetchone()
        assert (state, task_id) == ("submitted", "task-9")
        other.close()
        rec = journal.job(jobs[0].key)
        assert rec.attempts == 2
        assert rec.estimated_seconds == 12.0
        assert rec.submitted_at is not None
        assert rec.submitted_at.endswith("Z")


def test_polls_are_counted_and_started_at_is_set_once(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    key = jobs[0].key
    with journal:
        journal.mark_submitting(key)
        journal.mark_submitted(key, "t1")
        journal.record_poll(key, task_state="queued", provider_status="task_queue")
        journal.record_poll(key, task_state="running", provider_status="task_start",
                            state=JobState.RUNNING, elapsed_seconds=1.5)
        first_started = journal.job(key).started_at
        journal.record_poll(key, task_state="running", provider_status="task_output",
                            state=JobState.RUNNING)
        rec = journal.job(key)
        assert rec.polls == 3
        assert rec.state is JobState.RUNNING
        assert rec.started_at == first_started
        assert rec.provider_status == "task_output"
        assert rec.elapsed_seconds == 1.5
        polls = journal.events(key, kind="poll")
        assert [e.detail["status"] for e in polls] == ["task_queue", "task_start", "task_output"]


def test_a_synchronous_answer_dates_the_task_from_when_the_call_was_sent(
        tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    key = jobs[0].key
    with journal:
        journal.mark_submitting(key)
        sent = journal.job(key).updated_at
        journal._conn.execute("UPDATE jobs SET updated_at = ? WHERE key = ?",
                              ("2026-01-01T00:00:00.000Z", key))  # the call was sent then
        journal.mark_submitted(key, "call-1", ended="succeeded", provider_status="1 generated",
                               outputs=[{"url": "https://x/0.png"}])
        rec = journal.job(key)
        assert sent is not None
        assert rec.state is JobState.DOWNLOADING
        assert rec.submitted_at == rec.started_at == "2026-01-01T00:00:00.000Z"
        # a polled host's submit is dated by its answer
        other = jobs[1].key
        journal.mark_submitting(other)
        journal._conn.execute("UPDATE jobs SET updated_at = ? WHERE key = ?",
                              ("2026-01-01T00:00:00.000Z", other))
        journal.mark_submitted(other, "t2")
        assert journal.job(other).submitted_at != "2026-01-01T00:00:00.000Z"
        assert journal.job(other).started_at is None


def test_outputs_and_success_and_read_api(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    key = jobs[0].key
    with journal:
        journal.mark_downloading(key, [{"url": "https://x/0.png", "name": None,
                                        "content_type": "image/png", "size": 10}],
                                 cost_usd=0.03, credits=None)
        out = OutputRecord(key, 0, "outputs/job-0/0.png", "https://x/0.png", 10, "ab" * 32,
                           "image/png", 8, 6)
        journal.record_output(out)
        journal.mark_succeeded(key)
        rec = journal.job(key)
        assert rec.state is JobState.SUCCEEDED
        assert rec.cost_usd == 0.03
        assert rec.remote_outputs[0]["url"] == "https://x/0.png"
        (got,) = journal.outputs(key)
        assert (got.path, got.bytes, got.width, got.height) == ("outputs/job-0/0.png", 10, 8, 6)
        assert journal.outputs() == [got]
        assert journal.counts()["succeeded"] == 1
        assert set(journal.counts()) == {str(s) for s in JobState}
        kinds = [e.kind for e in journal.events(key)]
        assert kinds == ["state", "output", "state"]
        # events are append-only, numbered in order
        ids = [e.id for e in journal.events()]
        assert ids == sorted(ids)


def test_failed_unknown_cancelled_and_back_to_pending(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    a, b, c = (j.key for j in jobs)
    with journal:
        journal.mark_failed(a, "rejected: bad size", task_state="failed")
        journal.mark_unknown(b, "answer lost")
        journal.mark_cancelled(c)
        assert journal.job(a).error == "rejected: bad size"
        assert journal.job(b).state is JobState.UNKNOWN
        assert journal.job(c).task_state == "cancelled"
        journal.set_pending(b, clear_task=True, detail="retry accepted")
        assert journal.job(b).state is JobState.PENDING
        assert journal.job(b).error is None


def test_meta_values_are_json_and_overwritable(tmp_path: Path) -> None:
    journal, _ = _new(tmp_path)
    with journal:
        journal.set_meta("base_urls", {"wiro": "http://127.0.0.1:1/wiro/v1"})
        journal.set_meta("cancel_requested", "2024-01-01T00:00:00Z")
        journal.set_meta("cancel_requested", None)
        assert journal.meta()["base_urls"]["wiro"].endswith("/wiro/v1")
        assert journal.get_meta("cancel_requested") is None
        assert journal.get_meta("missing", 5) == 5


def test_reopen_and_refusals(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path)
    journal.mark_submitting(jobs[0].key)
    journal.close()
    with Journal.open(tmp_path / "journal.sqlite") as again:
        assert again.job(jobs[0].key).state is JobState.SUBMITTING
    with pytest.raises(RunDirError, match="never overwritten"):
        Journal.create(tmp_path / "journal.sqlite", jobs, {})
    with pytest.raises(RunDirError, match="no journal"):
        Journal.open(tmp_path / "nothing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RunDirError):
        Journal.open(tmp_path / "junk.sqlite")
    raw = sqlite3.connect(tmp_path / "journal.sqlite")
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(RunDirError, match="schema version 99"):
        Journal.open(tmp_path / "journal.sqlite")


def test_two_jobs_with_one_key_are_refused(tmp_path: Path) -> None:
    job = make_job("same")
    twin = make_job("same")
    with pytest.raises(RunDirError, match="same key"):
        Journal.create(tmp_path / "j.sqlite", [job, twin], {})


def _committed_state(path: Path, key: str) -> str:
    """The job's state as another process sees it (committed rows only)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()[0])
    finally:
        conn.close()


def test_in_a_loop_plain_writes_commit_per_tick_and_a_submit_at_once(tmp_path: Path) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 2)
    journal.commit_window = 0  # per tick (the window: the next tests)
    path = journal.path
    a, b = jobs[0].key, jobs[1].key
    seen: dict[str, str] = {}

    async def tick() -> None:
        journal.mark_submitting(a)
        journal.mark_submitted(a, "t-1")
        journal.record_poll(a, task_state="running", provider_status="task_start",
                            state=JobState.RUNNING)
        # not committed yet: this tick's plain writes go out together when it ends
        seen["poll, same tick"] = _committed_state(path, a)
        journal.mark_submitting(b)  # a durable write commits the batch before itself
        seen["after a durable write"] = _committed_state(path, a)
        seen["b, write-ahead"] = _committed_state(path, b)
        journal.mark_failed(b, "refused")
        seen["b failed, same tick"] = _committed_state(path, b)
        await asyncio.sleep(0)
        seen["b failed, next tick"] = _committed_state(path, b)

    asyncio.run(tick())
    assert seen == {"poll, same tick": "submitted", "after a durable write": "running",
                    "b, write-ahead": "submitting", "b failed, same tick": "submitting",
                    "b failed, next tick": "failed"}
    assert journal.job(a).polls == 1  # the connection reads its own writes
    journal.mark_succeeded(a)  # outside a loop: committed at once
    assert _committed_state(path, a) == "succeeded"
    journal.close()


def test_grouped_submits_share_one_commit_awaited_before_the_requests(tmp_path: Path) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 3)
    path = journal.path
    a, b, c = (job.key for job in jobs)
    seen: dict[str, str] = {}

    async def submit(key: str) -> None:
        journal.mark_submitting(key, grouped=True)
        seen[f"{key[:4]} before synced"] = _committed_state(path, key)
        await journal.synced()
        seen[f"{key[:4]} after synced"] = _committed_state(path, key)

    async def run() -> None:
        journal.mark_failed(c, "refused")  # a plain write opens the tick's batch first
        await asyncio.gather(submit(a), submit(b))
        await journal.synced()  # nothing pending: returns at once

    asyncio.run(run())
    assert seen == {f"{a[:4]} before synced": "pending", f"{b[:4]} before synced": "pending",
                    f"{a[:4]} after synced": "submitting",
                    f"{b[:4]} after synced": "submitting"}
    assert _committed_state(path, c) == "failed"
    assert [journal.job(k).attempts for k in (a, b)] == [1, 1]
    journal.close()


class _CountingConn:
    """The journal's connection, with every statement it is asked to run recorded."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self.statements.append(sql.split()[0] if not sql.startswith("PRAGMA") else sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        self.statements.append("MANY " + sql.split()[0])
        return self._conn.executemany(sql, rows)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def _events_committed(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def test_a_ticks_writes_cost_one_statement_each_and_their_events_one_insert(
        tmp_path: Path) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 3)
    journal.commit_window = 0  # per tick
    for job in jobs:
        journal.mark_submitting(job.key)
    counting = _CountingConn(journal._conn)
    journal._conn = counting  # type: ignore[assignment]
    created = _events_committed(journal.path)
    seen: dict[str, object] = {}

    async def tick() -> None:
        journal.record_poll(jobs[0].key, task_state="running", provider_status="start",
                            state=JobState.RUNNING)
        journal.mark_downloading(jobs[1].key, [{"url": "https://x/0.png"}], cost_usd=0.03,
                                 credits=None)
        journal.mark_failed(jobs[2].key, "refused")
        # read like the batch's other writes, committed with them (not before)
        seen["events read"] = [e.kind for e in journal.events()[-3:]]
        seen["events committed, same tick"] = _events_committed(journal.path) - created
        await asyncio.sleep(0)
        seen["events committed, next tick"] = _events_committed(journal.path) - created

    asyncio.run(tick())
    assert counting.statements == ["BEGIN", "UPDATE", "UPDATE", "UPDATE", "MANY INSERT",
                                   "SELECT", "COMMIT"]
    assert seen == {"events read": ["poll", "state", "state"],
                    "events committed, same tick": 0, "events committed, next tick": 3}
    journal.close()


def test_a_batched_write_that_fails_leaves_no_event(tmp_path: Path) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 1)
    before = len(journal.events())

    async def tick() -> None:
        journal.mark_failed(jobs[0].key, "refused")
        with pytest.raises(KeyError):
            journal.mark_failed("no-such-job", "refused")
        journal.note("after")

    asyncio.run(tick())
    assert [(e.kind, e.job_key) for e in journal.events()[before:]] == [
        ("state", jobs[0].key), ("after", None)]
    assert journal.job(jobs[0].key).state is JobState.FAILED
    journal.close()


def test_a_write_outside_a_loop_commits_its_event_with_it_or_neither(tmp_path: Path) -> None:
    journal, jobs = _new(tmp_path, 1)
    before = _events_committed(journal.path)
    journal.mark_failed(jobs[0].key, "refused")  # no loop: committed at once, event included
    assert _events_committed(journal.path) == before + 1

    def half_way() -> None:
        with journal._tx() as conn:
            conn.execute("UPDATE jobs SET error = 'x' WHERE key = ?", (jobs[0].key,))
            journal._event(jobs[0].key, "note", None, {"n": 1})
            raise RuntimeError("a write that fails half-way")

    with pytest.raises(RuntimeError):
        half_way()
    assert _events_committed(journal.path) == before + 1
    assert journal.job(jobs[0].key).error == "refused"
    journal.close()


def _record_syncs(monkeypatch: pytest.MonkeyPatch, log: list[str]) -> None:
    """Every data sync of this process, logged by the name of the file synced."""
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        log.append("sync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)


def test_durable_writes_are_synced_and_plain_ones_are_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal, jobs = _new(tmp_path, 2)
    log: list[str] = []
    _record_syncs(monkeypatch, log)
    journal.mark_failed(jobs[1].key, "refused")  # outside a loop: committed at once
    assert log == []
    journal.mark_submitting(jobs[0].key)
    assert log == ["sync journal.sqlite-wal"]
    journal.mark_submitted(jobs[0].key, "t-1")
    assert log == ["sync journal.sqlite-wal"] * 2
    journal.record_poll(jobs[0].key, task_state="queued", provider_status="q")
    assert len(log) == 2
    journal.close()


def test_a_durable_write_joins_the_open_batch_and_commits_it_synced_at_the_ticks_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 2)
    journal.commit_window = 60.0  # plain writes gather until the journal closes
    counting = _CountingConn(journal._conn)
    journal._conn = counting  # type: ignore[assignment]
    log = counting.statements
    _record_syncs(monkeypatch, log)

    async def run() -> None:
        journal.mark_failed(jobs[1].key, "refused")  # plain batch first
        journal.mark_submitting(jobs[0].key, grouped=True)  # the batch becomes durable
        await journal.synced()  # committed at the end of that tick, window or not
        journal.record_poll(jobs[0].key, task_state="queued", provider_status="q")  # plain
        await asyncio.sleep(0)
        journal.record_poll(jobs[0].key, task_state="queued", provider_status="q")  # again

    asyncio.run(run())
    journal.close()
    assert log == [
        # the plain write and the submit: one transaction, synced once committed
        "BEGIN", "UPDATE", "UPDATE", "MANY INSERT", "COMMIT", "sync journal.sqlite-wal",
        # the two plain writes of two ticks share one transaction (the window), unsynced
        "BEGIN", "UPDATE", "UPDATE", "MANY INSERT", "COMMIT"]
    journal = Journal.open(journal.path)
    assert [journal.job(job.key).state for job in jobs] == [JobState.SUBMITTING,
                                                            JobState.FAILED]
    journal.close()


def test_plain_writes_commit_together_once_the_window_has_passed(tmp_path: Path) -> None:
    import asyncio

    journal, jobs = _new(tmp_path, 3)
    journal.commit_window = 0.05
    created = _events_committed(journal.path)
    seen: dict[str, int] = {}

    async def run() -> None:
        for job in jobs:
            journal.mark_failed(job.key, "refused")
            await asyncio.sleep(0)
        # the window's timer is due before this sleep ends, whatever the load
        await asyncio.sleep(0.2)
        seen["after the window"] = _events_committed(journal.path) - created
        journal.note("later")  # a new window
        await asyncio.sleep(0.2)
        seen["after the next window"] = _events_committed(journal.path) - created

    asyncio.run(run())
    assert seen == {"after the window": 3, "after the next window": 4}
    assert [journal.job(job.key).state for job in jobs] == [JobState.FAILED] * 3
    journal.close()
