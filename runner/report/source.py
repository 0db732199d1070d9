"""A run directory → :class:`~runner.report.records.RunRecords`.

What was asked comes from ``plan.json`` (each job's prompt, parameters, matrix values,
reference images: :func:`runner.rundir.read_plan`, partial records accepted), and so do
the manifest's matrix-axis order and description; what happened comes from
``journal.sqlite`` (states, task ids, attempts, polls, times, costs, outputs). A plan.json
written before it carried the axis order and description: they are read from the
byte-exact ``manifest.yaml`` copy (:func:`manifest_facts`).

Journal meta keys read (each optional, with a fallback): ``run_id`` (else the directory
name), ``name`` (else plan.json's), ``description`` (else the manifest's),
``manifest_path`` and ``manifest_sha256`` (else plan.json's ``manifest``, else the copy's
hash), ``started_at`` and ``finished_at`` (else the first and last journal events),
``emulated``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from runner.errors import RunDirError
from runner.execute.journal import Journal
from runner.jobs import Job
from runner.manifest.plan import description_of, matrix_axes
from runner.outputs import OutputRecord
from runner.report.records import JobRecord, JobStatus, RunMeta, RunRecords
from runner.rundir import JOURNAL_NAME, MANIFEST_NAME, read_plan

# Journal state → report status. A task that exists but was not followed to its end is
# "pending" (resume re-attaches); a submit whose answer was lost is "unknown".
STATUS_OF_STATE = {
    "pending": JobStatus.PENDING,
    "submitting": JobStatus.UNKNOWN,
    "submitted": JobStatus.PENDING,
    "running": JobStatus.PENDING,
    "downloading": JobStatus.PENDING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "unknown": JobStatus.UNKNOWN,
    "skipped": JobStatus.SKIPPED,
    "reused": JobStatus.SUCCEEDED,
}
_REUSED_PREFIX = "reused from "
# A journal job plan.json does not describe: asked for nothing we know of.
_UNPLANNED = Job(key="", name="", alias="", model="", provider="", prompt="", params={})


def manifest_facts(text: str) -> tuple[tuple[str, ...], str | None]:
    """Matrix variable names in the order a manifest's text writes them (top level, then
    jobs), and its description: for a run whose plan.json does not carry them."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return (), None
    return matrix_axes(data), description_of(data)


def _manifest_copy(run_dir: Path) -> bytes:
    try:
        return (run_dir / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return b""


def _reused_from(row: Any, journal: Any) -> str | None:
    reason = row.reason or ""
    if reason.startswith(_REUSED_PREFIX):
        return reason[len(_REUSED_PREFIX):]
    for event in reversed(journal.events(row.key)):
        if event.state == "reused" and event.detail.get("from"):
            return str(event.detail["from"])
    return None


def records_from_journal(run_dir: str | Path) -> RunRecords:
    """Read a run directory's plan, journal and manifest copy into run records."""
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL_NAME).is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {JOURNAL_NAME})")
    plan_doc = read_plan(run_dir, partial=True)
    plan = {job.key: job for job in plan_doc.jobs}
    with Journal.open(run_dir / JOURNAL_NAME) as journal:
        meta = journal.meta()
        rows = journal.jobs()
        outputs_by_job: dict[str, list[OutputRecord]] = {}
        for out in journal.outputs():
            outputs_by_job.setdefault(out.job_key, []).append(out)
        events = journal.events()
        via = {e.job_key: str(e.detail.get("via")) for e in events
               if e.state == "reused" and e.detail.get("via")}
        ran_on = journal.ran_on_after_cancel()
        emulated = bool(meta.get("emulated") or meta.get("emulate"))
        listed = meta.get("emulated_providers")
        emulated_providers = (tuple(sorted(listed)) if isinstance(listed, list) else
                              tuple(sorted({r.provider for r in rows})) if emulated else ())
        providers = _provider_origins(meta.get("providers"))
        jobs = []
        for row in rows:
            spec = plan.get(row.key, _UNPLANNED)
            state = str(row.state)
            status = STATUS_OF_STATE.get(state, JobStatus.PENDING)
            reused = state == "reused"
            error = row.error
            if status is not JobStatus.SUCCEEDED and not error:
                error = row.reason
            if state in ("submitted", "running", "downloading") and not error:
                error = f"interrupted while {state}; `seedbatch resume` re-attaches"
            jobs.append(JobRecord(
                key=row.key, name=row.name, provider=row.provider, model=row.model,
                alias=row.alias, prompt=spec.prompt, params=spec.params, axes=spec.axes,
                index=spec.index, inputs=spec.images,
                status=status, error=None if status is JobStatus.SUCCEEDED else error,
                task_id=row.task_id, attempts=row.attempts, polls=row.polls,
                submitted_at=row.submitted_at, started_at=row.started_at,
                finished_at=row.finished_at, cost_usd=row.cost_usd, credits=row.credits,
                estimate_images=row.estimate_images, estimate_usd=row.estimate_usd,
                estimate_credits=row.estimate_credits, reused=reused,
                reused_from=_reused_from(row, journal) if reused else None,
                reused_via=via.get(row.key) if reused else None,
                outputs=tuple(outputs_by_job.get(row.key, ())),
                emulated=row.provider in emulated_providers,
                ran_on_after_cancel=row.key in ran_on,
            ))
    sha = (meta.get("manifest_sha256") or plan_doc.manifest_sha256
           or hashlib.sha256(_manifest_copy(run_dir)).hexdigest())
    if plan_doc.axes is not None:
        axes, description = plan_doc.axes, plan_doc.description
    else:
        axes, description = manifest_facts(
            _manifest_copy(run_dir).decode("utf-8", errors="replace"))
    return RunRecords(
        meta=RunMeta(
            run_id=str(meta.get("run_id") or run_dir.name),
            name=str(meta.get("name") or plan_doc.name),
            description=meta.get("description") or description,
            manifest_path=str(meta.get("manifest_path") or plan_doc.manifest_path),
            manifest_sha256=str(sha),
            manifest_copy=MANIFEST_NAME,
            started_at=meta.get("started_at") or (events[0].ts if events else None),
            finished_at=meta.get("finished_at") or (events[-1].ts if events else None),
            axes=axes,
            emulated=emulated,
            emulated_providers=emulated_providers,
            providers=providers,
            store=_store_meta(meta.get("store")),
        ),
        jobs=tuple(jobs),
    )


def _store_meta(meta: Any) -> dict[str, Any] | None:
    """The journal's ``store`` meta as the report shows it (no per-key bookkeeping)."""
    if not isinstance(meta, dict):
        return None
    return {"url": meta.get("url"), "jobs_stored": int(meta.get("jobs_stored") or 0),
            "jobs_not_stored": int(meta.get("jobs_not_stored") or 0),
            "not_stored": list(meta.get("not_stored") or []), "error": meta.get("error")}


ORIGIN_KEYS = ("entry_point", "distribution", "version")


def _provider_origins(listed: Any) -> dict[str, dict[str, str | None]]:
    """The journal's ``providers`` meta (run start): provider → where it came from."""
    if not isinstance(listed, dict):
        return {}
    return {str(name): {k: None if origin.get(k) is None else str(origin.get(k))
                        for k in ORIGIN_KEYS}
            for name, origin in sorted(listed.items()) if isinstance(origin, dict)}
