"""A run and the store: look up before submitting, upload after downloading, push, pull.

* :func:`fetch_hits` — the jobs of a plan made for real that the store holds, their
  objects fetched and checked against their sha256 before the run; its ``lookup`` is a
  :data:`~runner.outputs.ReuseLookup` whose hits name the run that made the outputs.
  ``runner.api`` puts it after the lookup over earlier local runs.
* :class:`RunUploads` — the executor's ``on_succeeded`` hook: each job downloaded for real
  is queued for upload (:mod:`runner.store.upload`); ``finish`` waits and records what was
  stored in the journal's ``store`` meta (report.json ``run.store``).
* :func:`push_run` — ``seedbatch push``: every real output of a finished run that the store
  lacks, its record too.
* :func:`pull_to` — ``seedbatch pull --to DIR``: the plan's outputs named by
  ``output.filename`` under DIR, without a run.

Emulated outputs never enter a store and are never served from one: the jobs of a provider
the run reaches through an emulator are neither looked up nor uploaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import StoreError
from runner.execute.journal import Journal
from runner.files import atomic_write_bytes
from runner.jobs import Job, Plan, sha256_file
from runner.media import ACCEPTED_TYPES
from runner.outputs import OutputRecord, ReusedOutput, ReuseHit
from runner.report import finalize
from runner.report.build import iso_utc
from runner.report.source import records_from_journal
from runner.rundir import JOURNAL_NAME, RunLock, check_record_dir, output_name_for, output_names
from runner.store.store import Store, StoredOutput, StoreRecord, record_for
from runner.store.upload import Uploader, UploadItem, UploadPolicy, UploadSummary

VIA_STORE = "store"
META_KEY = "store"  # the journal meta that says what of a run is in the store


# -- looking up -------------------------------------------------------------------------------

def hit_of(record: StoreRecord, staged: Mapping[str, Path]) -> ReuseHit:
    """What the executor needs to place a record's outputs: ``staged`` maps each object's
    sha256 to where its checked bytes wait."""
    return ReuseHit(record.run_id, tuple(
        ReusedOutput(source=staged[o.sha256], index=o.index, bytes=o.bytes,
                     sha256=o.sha256, content_type=o.content_type, width=o.width,
                     height=o.height)
        for o in record.outputs), via=VIA_STORE)


def store_records(store: Store, jobs: Iterable[Job],
                  emulated_providers: Collection[str] = ()) -> dict[str, StoreRecord]:
    """The newest record of every job made for real (not through an emulator) that the
    store holds. Raises StoreError when the store cannot be read."""
    keys = [job.key for job in jobs if job.provider not in emulated_providers]
    return {key: rec for key, rec in store.newest_many(keys).items() if rec is not None}


class StoreHits:
    """The jobs a store provides, their objects fetched and checked (sha256) into a
    staging folder that lives until :meth:`close`; ``lookup`` is the executor's hook."""

    def __init__(self, hits: Mapping[str, ReuseHit], notes: Sequence[str] = (),
                 staging: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.hits = dict(hits)
        self.notes = tuple(notes)
        self._staging = staging

    def lookup(self, job: Job) -> ReuseHit | None:
        return self.hits.get(job.key)

    def close(self) -> None:
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None


def fetch_hits(store: Store, jobs: Iterable[Job], emulated_providers: Collection[str] = (),
               *, workers: int = 8) -> StoreHits:
    """Look every job made for real up in the store and fetch the objects of those it
    holds (``workers`` at once), each checked against its sha256. A job whose record or
    object cannot be read, or is damaged, is not a hit: it runs (a note says why)."""
    try:
        found = store_records(store, jobs, emulated_providers)
    except StoreError as exc:
        return StoreHits({}, [f"store not read ({exc}): every job runs as if it had none"])
    if not found:
        return StoreHits({})
    staging = tempfile.TemporaryDirectory(prefix="seedbatch-store-")
    folder = Path(staging.name)
    wanted = sorted({o.sha256 for rec in found.values() for o in rec.outputs})

    def fetch(sha256: str) -> tuple[str, str | None]:
        try:
            atomic_write_bytes(folder / sha256, store.get_object(sha256))
        except (StoreError, OSError) as exc:
            return sha256, str(exc)
        return sha256, None

    with ThreadPoolExecutor(max_workers=1 if store.local else workers) as pool:
        problems = {sha: why for sha, why in pool.map(fetch, wanted) if why is not None}
    staged = {sha: folder / sha for sha in wanted if sha not in problems}
    hits, notes = {}, []
    for key, record in found.items():
        bad = [problems[o.sha256] for o in record.outputs if o.sha256 in problems]
        if bad:
            notes.append(f"{record.name}: not placed from the store ({bad[0]}); it runs")
            continue
        hits[key] = hit_of(record, staged)
    return StoreHits(hits, notes, staging)


# -- uploading --------------------------------------------------------------------------------

def item_for(run_dir: Path, run_id: str, job_key: str, name: str, model: str, provider: str,
             outputs: Sequence[OutputRecord], *, made_at: str | None, task_id: str | None,
             cost_usd: float | None, credits: float | None) -> UploadItem:
    ordered = sorted(outputs, key=lambda o: o.index)
    record = record_for(job_key, name, model, provider, run_id,
                        [StoredOutput(o.index, o.sha256, o.bytes, o.content_type, o.width,
                                      o.height) for o in ordered],
                        made_at, task_id=task_id, cost_usd=cost_usd, credits=credits)
    return UploadItem(record, tuple(run_dir / o.path for o in ordered))


class RunUploads:
    """Uploads a run's outputs as its jobs are delivered (``job_done`` is the executor's
    ``on_succeeded`` hook, called in the run's event loop: it only reads the journal and
    queues)."""

    def __init__(self, store: Store, journal: Journal, run_dir: Path, run_id: str,
                 emulated_providers: Collection[str] = (),
                 policy: UploadPolicy | None = None) -> None:
        self.store = store
        self.journal = journal
        self.run_dir = run_dir
        self.run_id = run_id
        self.emulated = frozenset(emulated_providers)
        self.uploader = Uploader(store, policy)
        self.queued = 0

    def job_done(self, key: str) -> None:
        rec = self.journal.job(key)
        if rec.provider in self.emulated:
            return  # a placeholder: never stored
        outputs = self.journal.outputs(key)
        if not outputs:
            return
        self.queued += 1
        self.uploader.submit(item_for(
            self.run_dir, self.run_id, key, rec.name, rec.model, rec.provider, outputs,
            made_at=rec.finished_at, task_id=rec.task_id, cost_usd=rec.cost_usd,
            credits=rec.credits))

    def finish(self) -> UploadSummary:
        """Wait for the uploads; record the outcome in the journal."""
        summary = self.uploader.close()
        record_outcome(self.journal, summary)
        return summary


def record_outcome(journal: Journal, summary: UploadSummary) -> dict[str, Any]:
    """Merge ``summary`` into the journal's ``store`` meta: a job stays "not stored" until
    a later pass (a resume, ``seedbatch push``) stores it."""
    old = journal.get_meta(META_KEY) or {}
    missing: dict[str, str] = dict(old.get("not_stored_keys") or {})
    for key in summary.stored_keys:
        missing.pop(key, None)
    for key in summary.failed:
        missing[key] = summary.names.get(key, key)
    stored = set(old.get("stored_keys") or ()) | summary.stored_keys
    error = summary.error or (old.get("error") if missing else None)
    meta = {"url": summary.url,
            "jobs_stored": len(stored),
            "objects_written": int(old.get("objects_written", 0)) + summary.objects_written,
            "jobs_not_stored": len(missing),
            "not_stored": sorted(missing.values())[:50],
            "not_stored_keys": missing,
            "stored_keys": sorted(stored),
            "error": error if missing else None}
    journal.set_meta(META_KEY, meta)
    journal.note("store", {"stored": summary.stored, "failed": len(summary.failed),
                           "url": summary.url})
    return meta


def not_stored_message(meta: Mapping[str, Any] | None, run_dir: Path) -> str | None:
    """The summary's line about a store that did not take everything, or None."""
    if not meta or not meta.get("jobs_not_stored"):
        return None
    n = int(meta["jobs_not_stored"])
    why = f" ({meta['error']})" if meta.get("error") else ""
    return (f"store {meta.get('url')}: {n} job{'s' if n != 1 else ''} not stored{why}; the "
            f"run itself is unaffected. Finish with: seedbatch push {run_dir}"
            + (f" --store {meta.get('url')}" if meta.get("url") else ""))


# -- push -------------------------------------------------------------------------------------

@dataclass
class PushResult:
    run_dir: Path
    summary: UploadSummary
    considered: int  # real, delivered jobs of the run
    emulated: int  # jobs left out: an emulator made them
    from_store: int  # jobs left out: their outputs came from a store
    unchanged: list[str] = field(default_factory=list)


def push_run(run_dir: str | Path, store: Store,
             policy: UploadPolicy | None = None) -> PushResult:
    """Upload every real output of ``run_dir`` the store lacks, and its record.

    Each file is checked against the sha256 the run recorded first (a changed file is not
    stored). Jobs an emulator made are left out; so are jobs placed from a store."""
    path = check_record_dir(Path(run_dir))
    lock = RunLock(path).acquire()
    try:
        records = records_from_journal(path)
        run_id = records.meta.run_id
        items: list[UploadItem] = []
        emulated = from_store = 0
        for job in records.jobs:
            if str(job.status) != "succeeded" or not job.outputs:
                continue
            if job.emulated:
                emulated += 1
                continue
            if job.reused and job.reused_via == VIA_STORE:
                from_store += 1
                continue
            made_by = job.reused_from if job.reused and job.reused_from else run_id
            items.append(item_for(path, made_by, job.key, job.name, job.model, job.provider,
                                  job.outputs, made_at=iso_utc(job.finished_at),
                                  task_id=job.task_id,
                                  cost_usd=None if job.reused else job.cost_usd,
                                  credits=None if job.reused else job.credits))
        summary = Uploader(store, policy).run(items)
        with Journal.open(path / JOURNAL_NAME) as journal:
            record_outcome(journal, summary)
        try:  # report.json's run.store says what is in the store now
            finalize(path)
        except Exception as exc:
            summary.report_problem = f"report not rewritten: {type(exc).__name__}: {exc}"
        return PushResult(path, summary, len(items), emulated, from_store)
    finally:
        lock.release()


# -- pull -------------------------------------------------------------------------------------

@dataclass
class FolderPull:
    written: list[str] = field(default_factory=list)  # paths relative to the folder
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # job names the store lacks
    damaged: list[str] = field(default_factory=list)  # "job: why"


def pull_to(plan: Plan, store: Store, folder: str | Path) -> FolderPull:
    """Write the plan's outputs from the store under ``folder``, named by
    ``output.filename`` (a file already there with the same sha256 is left alone)."""
    folder = Path(folder)
    result = FolderPull()
    found = store_records(store, plan.jobs)
    for job in plan.jobs:
        record = found.get(job.key)
        if record is None:
            result.missing.append(job.name)
            continue
        for out in record.outputs:
            ext = ACCEPTED_TYPES.get(out.content_type, "png")
            rel = output_name_for(output_names(plan, job), out.index, ext)
            dest = folder / rel
            if dest.is_file() and sha256_file(dest) == out.sha256:
                result.unchanged.append(rel)
                continue
            try:
                data = store.get_object(out.sha256)
            except StoreError as exc:
                result.damaged.append(f"{job.name}: {exc}")
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, data)
            result.written.append(rel)
    return result
