"""The run's write-ahead journal: SQLite in WAL mode, one file in the run directory.

Every change of a job's state is committed *before* the remote call it announces, so a
process stopped at any instant (Ctrl-C, a crash, ``kill -9``, a power cut: the commits a
remote call waits for are synced to disk) leaves a journal that says exactly what may have
happened remotely::

    pending ──▶ submitting ──▶ submitted ──▶ running ──▶ downloading ──▶ succeeded
       ▲            │  (attempt counted and committed before the request leaves)
       │            ├─▶ downloading / failed   a synchronous host answered with the end
       │            │                          (one commit with the task id; never polled)
       └────────────┤ transient error: the provider surely created nothing
                    ├─▶ unknown    the request left, no answer came back (never resent)
                    └─▶ failed     the provider refused this job
    also: cancelled, skipped (--only), reused (outputs from an earlier run)

A job left in ``submitting`` by a stopped process has an unknown fate; ``resume`` turns it
into ``unknown``. A job with a task id is re-attached (polled), never submitted again.

Tables: ``meta`` (key → JSON value; ``schema_version`` among them), ``jobs`` (one row per
planned job), ``outputs`` (one row per downloaded image), ``events`` (append-only log:
every state change and every poll). Read with :meth:`Journal.jobs`,
:meth:`Journal.outputs`, :meth:`Journal.meta` and :meth:`Journal.events`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from runner.errors import RunDirError
from runner.jobs import Job
from runner.outputs import OutputRecord

SCHEMA_VERSION = 1
#: ``task_state`` of a job whose remote task succeeded (and was billed).
TASK_SUCCEEDED = "succeeded"
#: The event kind recorded for a job whose task a cancel could not stop (it ran on, billed).
RAN_ON_EVENT = "cancel_unsupported"


class JobState(StrEnum):
    """Where a job stands. The groupings below are the one place that says which states
    are in flight, delivered, ended or final; every reader (executor, api, progress,
    report, status) asks them rather than listing states."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    REUSED = "reused"

    @property
    def in_flight(self) -> bool:
        """A submit request left (or is leaving), or a remote task exists: this run is
        still working on it and it may be billed."""
        return self in IN_FLIGHT

    @property
    def attached(self) -> bool:
        """A remote task exists and is being followed (poll and download, never resubmit)."""
        return self in ATTACHED

    @property
    def delivered(self) -> bool:
        """Its outputs are in the run directory (downloaded, or reused from an earlier run)."""
        return self in DELIVERED

    @property
    def ended(self) -> bool:
        """This run's work on it is over (what progress counts as done); ``unknown`` and a
        failed download may still be taken up again by ``resume``."""
        return self in ENDED

    @property
    def final(self) -> bool:
        """Nothing will ever change it: not even ``resume`` (``unknown`` is not final, and a
        ``failed`` job whose paid outputs were not downloaded is not either: see
        :attr:`JobRecord.paid_not_downloaded`)."""
        return self in FINAL


#: A request left or a task exists (this run still follows it; it may be billed).
IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING,
                       JobState.DOWNLOADING})
#: A remote task exists and is followed.
ATTACHED = frozenset({JobState.SUBMITTED, JobState.RUNNING, JobState.DOWNLOADING})
#: Outputs are in the run directory.
DELIVERED = frozenset({JobState.SUCCEEDED, JobState.REUSED})
#: Done for this run (progress): delivered, failed, cancelled, or of unknown outcome.
ENDED = frozenset({JobState.SUCCEEDED, JobState.REUSED, JobState.FAILED, JobState.CANCELLED,
                   JobState.UNKNOWN})
#: Never changes again (a failed job whose paid outputs were not downloaded excepted).
FINAL = frozenset({JobState.SUCCEEDED, JobState.REUSED, JobState.FAILED, JobState.CANCELLED,
                   JobState.SKIPPED})
#: A run is all right when every job is in one of these.
OK_STATES = DELIVERED | {JobState.SKIPPED}


STATE_ORDER: tuple[JobState, ...] = tuple(JobState)

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                   -- JSON
);
CREATE TABLE jobs (
    key               TEXT PRIMARY KEY,   -- the job's content key (sha256)
    seq               INTEGER NOT NULL,   -- position in the plan
    name              TEXT NOT NULL,
    alias             TEXT NOT NULL,
    model             TEXT NOT NULL,
    provider          TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,   -- submit requests sent (or about to be)
    polls             INTEGER NOT NULL DEFAULT 0,
    task_id           TEXT,
    task_state        TEXT,               -- last TaskState the provider reported
    provider_status   TEXT,               -- the provider's own last status word
    estimated_seconds REAL,               -- provider's estimate at submit
    elapsed_seconds   REAL,               -- provider-reported run time
    remote_outputs    TEXT,               -- JSON list of {url, name, content_type, size}
    cost_usd          REAL,               -- provider-reported
    credits           REAL,               -- provider-reported
    estimate_images   INTEGER NOT NULL DEFAULT 0,
    estimate_usd      REAL NOT NULL DEFAULT 0,
    estimate_credits  REAL NOT NULL DEFAULT 0,
    error             TEXT,               -- why it failed / is unknown
    reason            TEXT,               -- why it is skipped or still pending (budget, --only)
    submitted_at      TEXT,               -- ISO 8601 UTC: task id received
    started_at        TEXT,               -- first seen running
    finished_at       TEXT,
    updated_at        TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs(state);
CREATE TABLE outputs (
    job_key      TEXT NOT NULL REFERENCES jobs(key),
    idx          INTEGER NOT NULL,
    path         TEXT NOT NULL,           -- relative to the run directory (POSIX)
    url          TEXT,
    bytes        INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width        INTEGER,
    height       INTEGER,
    finished_at  TEXT NOT NULL,
    PRIMARY KEY (job_key, idx)
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      TEXT NOT NULL,
    job_key TEXT,
    kind    TEXT NOT NULL,                -- state | poll | error | note | cancel | …
    state   TEXT,
    detail  TEXT                          -- JSON
);
CREATE INDEX events_job ON events(job_key);
"""


_INSERT_EVENT = "INSERT INTO events(ts, job_key, kind, state, detail) VALUES (?,?,?,?,?)"


@functools.lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...]) -> str:
    """One text per set of columns (SQLite's statement cache is keyed by the text)."""
    return f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in columns)} WHERE key = ?"


def utc_now() -> str:
    """``2026-12-02T21:36:12.123Z``: UTC to the millisecond (truncated)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class JobRecord:
    key: str
    seq: int
    name: str
    alias: str
    model: str
    provider: str
    state: JobState
    attempts: int
    polls: int
    task_id: str | None
    task_state: str | None
    provider_status: str | None
    estimated_seconds: float | None
    elapsed_seconds: float | None
    remote_outputs: tuple[dict[str, Any], ...]
    cost_usd: float | None
    credits: float | None
    estimate_images: int
    estimate_usd: float
    estimate_credits: float
    error: str | None
    reason: str | None
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str

    @property
    def paid_not_downloaded(self) -> bool:
        """The task succeeded (and was billed) but its outputs were not all downloaded:
        ``resume`` fetches them."""
        return (self.state is JobState.FAILED and self.task_state == TASK_SUCCEEDED
                and self.task_id is not None)

    @property
    def billed(self) -> bool:
        """Paid for: the task succeeded (outputs downloaded or not)."""
        return self.state in (JobState.SUCCEEDED, JobState.DOWNLOADING) or \
            self.paid_not_downloaded

    @property
    def answered_at_submit(self) -> bool:
        """The host answered the submit with the task's end (a synchronous host): its
        outputs were journaled with the task id and no poll was ever made — nor can be, as
        there is no task to ask about. ``resume`` downloads the journaled links. (A polled
        host's success is only ever learnt by a poll, so ``polls`` is then at least 1.)"""
        return self.task_state == TASK_SUCCEEDED and self.polls == 0 and \
            self.task_id is not None and bool(self.remote_outputs)

    def has_work(self, *, retry_unknown: bool = False) -> bool:
        """What ``resume`` picks up: pending jobs, tasks that exist, paid outputs not yet
        downloaded, and (with ``retry_unknown``) lost submits."""
        if self.state is JobState.UNKNOWN:
            return retry_unknown
        return self.state is JobState.PENDING or self.state.in_flight or \
            self.paid_not_downloaded

    def to_dict(self) -> dict[str, Any]:
        return {name: (str(getattr(self, name)) if name == "state" else getattr(self, name))
                for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    ts: str
    job_key: str | None
    kind: str
    state: str | None
    detail: dict[str, Any]


def _row_to_job(row: sqlite3.Row) -> JobRecord:
    outs = json.loads(row["remote_outputs"]) if row["remote_outputs"] else []
    return JobRecord(
        key=row["key"], seq=row["seq"], name=row["name"], alias=row["alias"],
        model=row["model"], provider=row["provider"], state=JobState(row["state"]),
        attempts=row["attempts"], polls=row["polls"], task_id=row["task_id"],
        task_state=row["task_state"], provider_status=row["provider_status"],
        estimated_seconds=row["estimated_seconds"], elapsed_seconds=row["elapsed_seconds"],
        remote_outputs=tuple(outs), cost_usd=row["cost_usd"], credits=row["credits"],
        estimate_images=row["estimate_images"], estimate_usd=row["estimate_usd"],
        estimate_credits=row["estimate_credits"], error=row["error"], reason=row["reason"],
        submitted_at=row["submitted_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], updated_at=row["updated_at"],
    )


def _row_to_output(row: sqlite3.Row) -> OutputRecord:
    return OutputRecord(job_key=row["job_key"], index=row["idx"], path=row["path"],
                        url=row["url"], bytes=row["bytes"], sha256=row["sha256"],
                        content_type=row["content_type"], width=row["width"],
                        height=row["height"], finished_at=row["finished_at"])


#: Seconds the plain writes made in an event loop gather before they commit together.
COMMIT_WINDOW = 0.05


class Journal:
    """One run's journal. Every durable write (a submit's attempt, its task id, metadata)
    commits before it returns; the others commit together within ``commit_window`` seconds
    (at once outside a loop), see :meth:`_tx`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.commit_window = COMMIT_WINDOW  # 0: at the end of the loop's tick
        self._batching = False  # a transaction of batched writes is open
        self._batch_durable = False  # ... holding a durable write: synced when it commits
        # The write-ahead log SQLite keeps beside the journal, synced after durable commits
        self._wal = f"{os.path.abspath(path)}-wal"
        self._wal_fd: int | None = None
        self._flush_at: asyncio.Handle | None = None
        # Waiters for the open batch's commit (grouped durable writes, see :meth:`synced`)
        self._committed: asyncio.Future[None] | None = None
        # Event rows of the open transaction's writes, inserted together (one executemany)
        # just before it commits, or before events are read: see :meth:`_event`
        self._events: list[tuple[str, str | None, str, str | None, str | None]] = []

    # -- opening --------------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RunDirError(f"{path}: the journal could not be put in WAL mode ({mode})")
        # Commits survive a crash of this process; a durable one is also synced to disk
        # (:meth:`_sync`), which makes it survive a power cut, as ``synchronous = FULL``
        # would, without switching the connection's setting between transactions.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @classmethod
    def create(cls, path: str | Path, jobs: Sequence[Job], meta: Mapping[str, Any],
               *, skipped: Mapping[str, str] | None = None) -> Journal:
        """A new journal holding every planned job (``pending``, or ``skipped`` with the
        reason given in ``skipped``)."""
        path = Path(path)
        if path.exists():
            raise RunDirError(f"{path} exists already: a journal is never overwritten")
        seen: dict[str, str] = {}
        for job in jobs:
            if job.key in seen:
                raise RunDirError(f"jobs {seen[job.key]!r} and {job.name!r} ask the provider "
                                  f"exactly the same thing (same key); vary them or use repeat")
            seen[job.key] = job.name
        conn = cls._connect(path)
        journal = cls(conn, path)
        skipped = skipped or {}
        now = utc_now()
        with journal._tx(durable=True):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            meta = {"schema_version": SCHEMA_VERSION, **meta}
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in meta.items()])
            conn.executemany(
                "INSERT INTO jobs(key, seq, name, alias, model, provider, state, "
                "estimate_images, estimate_usd, estimate_credits, reason, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(job.key, seq, job.name, job.alias, job.model, job.provider,
                  str(JobState.SKIPPED if job.key in skipped else JobState.PENDING),
                  job.estimate.images, job.estimate.usd, job.estimate.credits,
                  skipped.get(job.key), now) for seq, job in enumerate(jobs)])
            conn.execute("INSERT INTO events(ts, kind, detail) VALUES (?, 'created', ?)",
                         (now, json.dumps({"jobs": len(jobs), "skipped": len(skipped)})))
        return journal

    @classmethod
    def open(cls, path: str | Path) -> Journal:
        path = Path(path)
        if not path.is_file():
            raise RunDirError(f"{path}: no journal here; is this a run directory?")
        try:
            conn = cls._connect(path)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                   ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise RunDirError(f"{path}: not a readable journal ({exc})") from None
        if version is None or json.loads(version[0]) != SCHEMA_VERSION:
            conn.close()
            found = None if version is None else json.loads(version[0])
            raise RunDirError(f"{path}: journal schema version {found}, this seedbatch reads "
                              f"version {SCHEMA_VERSION}")
        return cls(conn, path)

    def close(self) -> None:
        try:
            self.flush()
            self._conn.close()
        finally:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    def _sync(self) -> None:
        """Make every commit so far survive a power cut: sync the write-ahead log, where a
        commit lands first (``synchronous = FULL`` does the same at each commit)."""
        if self._wal_fd is None:
            self._wal_fd = os.open(self._wal, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        sync = getattr(os, "fdatasync", os.fsync)
        sync(self._wal_fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, durable: bool = False, grouped: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction. ``durable`` commits survive a power cut (the write-ahead log is
        synced after them, :meth:`_sync`); the others survive a crash of this process (WAL,
        ``synchronous = NORMAL``) and become durable with the next durable commit.

        Inside an event loop the others are batched: they join one transaction committed
        ``commit_window`` seconds after the first of them (:meth:`flush`; 0: when the loop's
        current round of callbacks ends), so the writes of every task that ends meanwhile
        cost one commit — SQLite writes each page the batch touched once. A durable write
        commits that batch first, then itself: what was written before it is never
        committed after it. A crash of this process loses at most the last window's plain
        writes (a poll's answer, an output's record), which ``resume`` does again.

        A ``grouped`` durable write (inside a loop) joins the batch instead, makes it
        durable and commits it at the end of the tick, with whatever plain writes it held:
        one commit and one sync for every write of the tick. Its caller must ``await``
        :meth:`synced` before acting on it (a submit's request leaves only then).

        A write joining a batch runs ONE statement on the journal's tables, its event row
        queued (:meth:`_event`) only once that statement succeeded: a statement is atomic, so
        a write either happens whole (row and event, committed together) or not at all, with
        no savepoint around it."""
        if (grouped or not durable) and self._batch_tx(durable=durable):
            queued = len(self._events)
            try:
                yield self._conn
            except BaseException:
                del self._events[queued:]
                raise
            return
        self.flush()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._insert_events()
        except BaseException:
            self._events.clear()
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        if durable:
            self._sync()

    def _batch_tx(self, durable: bool = False) -> bool:
        """Join the batch, opening it if need be (``durable``: it then commits, synced, at
        the end of this tick, window or not); False outside an event loop."""
        if self._batching and (self._batch_durable or not durable):
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._flush_at is not None:
            self._flush_at.cancel()
        if durable or self.commit_window <= 0:
            self._flush_at = loop.call_soon(self.flush)
        else:
            self._flush_at = loop.call_later(self.commit_window, self.flush)
        if not self._batching:
            self._conn.execute("BEGIN IMMEDIATE")
            self._batching = True
        self._batch_durable = durable
        return True

    def flush(self) -> None:
        """Commit the open batch of writes, if any."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._batching:
            self._batching = False
            durable, self._batch_durable = self._batch_durable, False
            waiters, self._committed = self._committed, None
            try:
                self._insert_events()
                self._conn.execute("COMMIT")
                if durable:
                    self._sync()
            except BaseException as exc:
                if waiters is not None and not waiters.done():
                    waiters.set_exception(exc)
                    waiters.exception()  # retrieved by whoever awaits it, or by nobody
                raise
            if waiters is not None and not waiters.done():
                waiters.set_result(None)

    async def synced(self) -> None:
        """Return once every write made so far is committed (durably, for grouped durable
        writes): when the open batch commits, or at once when nothing is pending."""
        if not self._batching:
            return
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._committed)

    # -- writes ---------------------------------------------------------------------------

    def _event(self, job_key: str | None, kind: str, state: str | None = None,
               detail: Mapping[str, Any] | None = None, ts: str | None = None) -> None:
        """Queue an event row of the open transaction (inside :meth:`_tx`, after the write's
        statement): inserted with the others just before the transaction commits."""
        self._events.append((ts or utc_now(), job_key, kind, state,
                             json.dumps(detail) if detail else None))

    def _insert_events(self) -> None:
        if self._events:
            rows, self._events = self._events, []
            self._conn.executemany(_INSERT_EVENT, rows)

    def _set(self, key: str, state: JobState | None, detail: Mapping[str, Any] | None = None,
             kind: str = "state", durable: bool = False, grouped: bool = False,
             **columns: Any) -> None:
        now = utc_now()
        if state is not None:
            columns["state"] = str(state)
        columns["updated_at"] = now
        sql = _update_sql(tuple(columns))
        with self._tx(durable, grouped) as conn:
            cur = conn.execute(sql, (*columns.values(), key))
            if cur.rowcount != 1:
                raise KeyError(key)
            self._event(key, kind, str(state) if state else None, detail, now)

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx(durable=True) as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                         "UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def note(self, kind: str, detail: Mapping[str, Any] | None = None,
             job_key: str | None = None) -> None:
        """Append an event that changes no job (a run-level notice, a retry, …)."""
        with self._tx():
            self._event(job_key, kind, None, detail)

    def mark_submitting(self, key: str, *, grouped: bool = False) -> int:
        """Count a submit attempt and commit it (durably) before the request leaves; returns
        the attempt number. ``grouped`` (in a loop): committed with the tick's other writes —
        the caller awaits :meth:`synced` before sending the request."""
        now = utc_now()
        with self._tx(durable=True, grouped=grouped) as conn:
            row = conn.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, error = NULL,"
                               " reason = NULL, updated_at = ? WHERE key = ? RETURNING attempts",
                               (str(JobState.SUBMITTING), now, key)).fetchone()
            if row is None:
                raise KeyError(key)
            self._event(key, "state", str(JobState.SUBMITTING), {"attempt": row[0]}, now)
        return int(row[0])

    def mark_submit_retry(self, key: str, error: str) -> None:
        """A submit failed with the provider surely having created nothing: back to pending."""
        self._set(key, JobState.PENDING, {"error": error}, kind="retry", error=error)

    def mark_submitted(self, key: str, task_id: str, *,
                       estimated_seconds: float | None = None, ended: str | None = None,
                       provider_status: str = "", outputs: Sequence[Mapping[str, Any]] = (),
                       cost_usd: float | None = None, credits: float | None = None,
                       error: str | None = None, grouped: bool = False) -> None:
        """The submit's answer: a task id. ``ended`` (a task state word) when a synchronous
        host answered with the task's end too — journaled in the same durable commit, so no
        instant exists where the job looks like a task to poll: ``succeeded`` goes straight
        to ``downloading`` with its ``outputs`` (never polled: see
        :attr:`JobRecord.answered_at_submit`), ``failed`` / ``cancelled`` end the job.
        ``grouped``: durable with the tick's batch (see :meth:`_tx`)."""
        now = utc_now()
        columns: dict[str, Any] = {"task_id": task_id, "estimated_seconds": estimated_seconds,
                                   "submitted_at": now, "error": None}
        state = JobState.SUBMITTED
        detail: dict[str, Any] = {"task_id": task_id}
        if ended is not None:
            detail["answered"] = ended
            # the task ran while the call was held: it was sent (and started) when the job
            # became submitting, so its time is the call's, not the download's alone
            row = self._conn.execute("SELECT updated_at FROM jobs WHERE key = ?",
                                     (key,)).fetchone()
            sent = row[0] if row is not None and row[0] else now
            columns.update(task_state=ended, provider_status=provider_status,
                           cost_usd=cost_usd, credits=credits, submitted_at=sent,
                           started_at=sent)
            if ended == TASK_SUCCEEDED:
                state = JobState.DOWNLOADING
                columns["remote_outputs"] = json.dumps(list(outputs))
                detail["outputs"] = len(outputs)
            else:
                state = JobState.CANCELLED if ended == "cancelled" else JobState.FAILED
                columns.update(error=error or f"task {ended}", finished_at=now)
        self._set(key, state, detail, durable=True, grouped=grouped, **columns)

    def record_poll(self, key: str, *, task_state: str, provider_status: str,
                    state: JobState | None = None, elapsed_seconds: float | None = None) -> None:
        """One poll's answer: counted, its states kept, ``state`` set when it changed."""
        now = utc_now()
        sets = ["polls = polls + 1", "task_state = ?", "provider_status = ?", "updated_at = ?"]
        values: list[Any] = [task_state, provider_status, now]
        if elapsed_seconds is not None:
            sets.append("elapsed_seconds = ?")
            values.append(elapsed_seconds)
        if state is not None:
            sets.append("state = ?")
            values.append(str(state))
            if state is JobState.RUNNING:
                sets.append("started_at = COALESCE(started_at, ?)")
                values.append(now)
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE key = ?",
                               (*values, key))
            if cur.rowcount != 1:
                raise KeyError(key)
            self._event(key, "poll", str(state) if state else None,
                        {"task_state": task_state, "status": provider_status}, now)

    def mark_downloading(self, key: str, outputs: Sequence[Mapping[str, Any]], *,
                         cost_usd: float | None, credits: float | None) -> None:
        self._set(key, JobState.DOWNLOADING, {"outputs": len(outputs)},
                  remote_outputs=json.dumps(list(outputs)), cost_usd=cost_usd,
                  credits=credits, task_state=TASK_SUCCEEDED)

    def record_output(self, out: OutputRecord) -> None:
        now = out.finished_at or utc_now()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO outputs(job_key, idx, path, url, bytes, sha256, content_type, "
                "width, height, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(job_key, idx) DO UPDATE SET path = excluded.path, "
                "url = excluded.url, bytes = excluded.bytes, sha256 = excluded.sha256, "
                "content_type = excluded.content_type, width = excluded.width, "
                "height = excluded.height, finished_at = excluded.finished_at",
                (out.job_key, out.index, out.path, out.url, out.bytes, out.sha256,
                 out.content_type, out.width, out.height, now))
            self._event(out.job_key, "output", None,
                        {"index": out.index, "path": out.path, "bytes": out.bytes}, now)

    def mark_succeeded(self, key: str) -> None:
        self._set(key, JobState.SUCCEEDED, finished_at=utc_now(), error=None, reason=None)

    def mark_failed(self, key: str, error: str, *, task_state: str | None = None,
                    cost_usd: float | None = None, credits: float | None = None) -> None:
        columns: dict[str, Any] = {"finished_at": utc_now(), "error": error}
        if task_state is not None:
            columns["task_state"] = task_state
        if cost_usd is not None:
            columns["cost_usd"] = cost_usd
        if credits is not None:
            columns["credits"] = credits
        self._set(key, JobState.FAILED, {"error": error}, **columns)

    def mark_unknown(self, key: str, reason: str) -> None:
        self._set(key, JobState.UNKNOWN, {"error": reason}, error=reason)

    def mark_cancelled(self, key: str, detail: str = "") -> None:
        self._set(key, JobState.CANCELLED, {"detail": detail} if detail else None,
                  finished_at=utc_now(), task_state="cancelled")

    def mark_skipped(self, key: str, reason: str) -> None:
        self._set(key, JobState.SKIPPED, {"reason": reason}, reason=reason)

    def mark_reused(self, key: str, outputs: Sequence[OutputRecord], source: str,
                    via: str = "") -> None:
        """``source`` is the run that made the outputs; ``via`` how they came ("store")."""
        for out in outputs:
            self.record_output(out)
        detail = {"from": source, "via": via} if via else {"from": source}
        self._set(key, JobState.REUSED, detail, reason=f"reused from {source}",
                  finished_at=utc_now())

    def set_pending(self, key: str, *, reason: str | None = None, clear_task: bool = False,
                    detail: str = "") -> None:
        """Back to ``pending`` (a budget hold, or ``--retry-unknown`` accepted by the user)."""
        columns: dict[str, Any] = {"reason": reason}
        if clear_task:
            columns.update(task_id=None, task_state=None, provider_status=None, error=None,
                           remote_outputs=None)
        self._set(key, JobState.PENDING, {"reason": reason or detail} if (reason or detail)
                  else None, **columns)

    def set_reason(self, key: str, reason: str | None) -> None:
        now = utc_now()
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET reason = ?, updated_at = ? WHERE key = ?",
                         (reason, now, key))
            self._event(key, "note", None, {"reason": reason}, now)

    def set_state(self, key: str, state: JobState, detail: Mapping[str, Any] | None = None) -> None:
        self._set(key, state, detail)

    # -- reads ----------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {row[0]: json.loads(row[1])
                for row in self._conn.execute("SELECT key, value FROM meta ORDER BY key")}

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def jobs(self, state: JobState | None = None) -> list[JobRecord]:
        if state is None:
            rows = self._conn.execute("SELECT * FROM jobs ORDER BY seq")
        else:
            rows = self._conn.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq",
                                      (str(state),))
        return [_row_to_job(row) for row in rows]

    def job(self, key: str) -> JobRecord:
        row = self._conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return _row_to_job(row)

    def outputs(self, job_key: str | None = None) -> list[OutputRecord]:
        if job_key is None:
            rows = self._conn.execute("SELECT o.* FROM outputs o JOIN jobs j ON j.key = o.job_key"
                                      " ORDER BY j.seq, o.idx")
        else:
            rows = self._conn.execute("SELECT * FROM outputs WHERE job_key = ? ORDER BY idx",
                                      (job_key,))
        return [_row_to_output(row) for row in rows]

    def events(self, job_key: str | None = None, kind: str | None = None) -> list[Event]:
        self._insert_events()  # the open batch's, read like its other writes
        sql = "SELECT * FROM events"
        where, args = [], []
        if job_key is not None:
            where.append("job_key = ?")
            args.append(job_key)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn.execute(sql + " ORDER BY id", args)
        return [Event(row["id"], row["ts"], row["job_key"], row["kind"], row["state"],
                      json.loads(row["detail"]) if row["detail"] else {}) for row in rows]

    def ran_on_after_cancel(self) -> set[str]:
        """Keys of jobs whose task could not be stopped when a cancel was asked for."""
        return {e.job_key for e in self.events(kind=RAN_ON_EVENT) if e.job_key}

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (zeros included), in lifecycle order."""
        found = Counter({row[0]: row[1] for row in
                         self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")})
        return {str(state): found.get(str(state), 0) for state in STATE_ORDER}

    def totals(self) -> dict[str, float]:
        """Provider-reported spend so far, and estimates for what was not reported."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(credits), 0) FROM jobs").fetchone()
        return {"cost_usd": float(row[0]), "credits": float(row[1])}
