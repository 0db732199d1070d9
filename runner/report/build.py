"""Run records → report.json's dict. Pure: no files, no network, no clock.

The shape is a contract (``schemas/report.schema.json``); every renderer (HTML, Markdown,
CSV), the lockfile and ``seedbatch verify`` read this dict, never the journal.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from runner.report.records import JobRecord, JobStatus, RunRecords, Timestamp
from runner.version import __version__

REPORT_VERSION = 1
TOOL_NAME = "seedbatch"
LIBRARIES = ("httpx", "jinja2", "jsonschema", "pyyaml", "pillow", "click", "rich", "aiolimiter",
             "stamina")
STATUSES = tuple(s.value for s in JobStatus)
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter strings would mask hashes and words, not secrets


def current_environment() -> dict[str, Any]:
    """Python and library versions of this process (read-only look-ups)."""
    libraries: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.system().lower() or "unknown",
        "libraries": libraries,
    }


def iso_utc(value: Timestamp) -> str | None:
    """A timestamp as ISO 8601 UTC text (``2025-01-31T09:30:00.250Z``), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        text = str(value).strip()
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    millis = moment.microsecond // 1000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return round(max(0.0, (b - a).total_seconds()), 3)


def _money(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return round(number, 9)


def _sum(values: Iterable[float | None]) -> float:
    return round(float(sum(v for v in values if v is not None)), 9)


def _plain(value: Any) -> Any:
    """Mappings and sequences as JSON-ready dicts and lists (tuples, frozen mappings…)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cost(record: JobRecord, status: str) -> dict[str, Any]:
    """What a job cost in this run: reported by its host, or — when a succeeded job's host
    reports nothing — its images × the price per image its estimate used."""
    if record.reused:
        return {"cost_usd": 0.0, "credits": 0.0, "cost_estimated": False}
    if (status == JobStatus.SUCCEEDED and record.cost_usd is None and record.credits is None
            and record.estimate_images > 0):
        images = len(record.outputs) or record.estimate_images
        per = images / record.estimate_images
        return {"cost_usd": _money(record.estimate_usd * per) if record.estimate_usd else None,
                "credits": (_money(record.estimate_credits * per)
                            if record.estimate_credits else None),
                "cost_estimated": bool(record.estimate_usd or record.estimate_credits)}
    return {"cost_usd": _money(record.cost_usd), "credits": _money(record.credits),
            "cost_estimated": False}


def _job(record: JobRecord) -> dict[str, Any]:
    submitted = iso_utc(record.submitted_at)
    started = iso_utc(record.started_at)
    finished = iso_utc(record.finished_at)
    status = JobStatus(record.status).value
    return {
        "key": record.key,
        "name": record.name,
        "provider": record.provider,
        "model": record.model,
        "alias": record.alias,
        "prompt": record.prompt,
        "params": _plain(record.params),
        "axes": _plain(record.axes),
        "index": record.index,
        "inputs": [
            {"ref": i.ref, "path": i.path, "url": i.url, "sha256": i.sha256}
            for i in record.inputs
        ],
        "status": status,
        "error": record.error,
        "task_id": record.task_id,
        "attempts": record.attempts,
        "polls": record.polls,
        "times": {
            "submitted_at": submitted,
            "started_at": started,
            "finished_at": finished,
            "duration_seconds": _seconds_between(submitted, finished),
        },
        **_cost(record, status),
        "estimate": {
            "images": record.estimate_images,
            "usd": _money(record.estimate_usd) or 0.0,
            "credits": _money(record.estimate_credits) or 0.0,
        },
        "reused": record.reused,
        "reused_from": record.reused_from if record.reused else None,
        "from_store": bool(record.reused and record.reused_via == "store"),
        "emulated": record.emulated,
        "ran_on_after_cancel": record.ran_on_after_cancel,
        "outputs": [
            {
                "path": o.path,
                "index": o.index,
                "url": o.url,
                "bytes": o.bytes,
                "sha256": o.sha256,
                "content_type": o.content_type,
                "width": o.width,
                "height": o.height,
            }
            for o in sorted(record.outputs, key=lambda o: (o.index, o.path))
        ],
    }


def _by_model(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    ran: dict[tuple[str, str], list[dict[str, Any]]] = {}  # this run's own succeeded jobs
    for job in jobs:
        at = (job["alias"], job["model"])
        row = rows.setdefault(at, {
            "alias": job["alias"], "model": job["model"], "provider": job["provider"],
            "jobs": 0, "succeeded": 0, "images": 0, "cost_usd": 0.0, "credits": 0.0,
            "estimate_usd": 0.0, "estimate_credits": 0.0,
        })
        ran.setdefault(at, [])
        row["jobs"] += 1
        row["succeeded"] += job["status"] == JobStatus.SUCCEEDED
        row["images"] += len(job["outputs"])
        row["cost_usd"] = _sum([row["cost_usd"], job["cost_usd"]])
        row["credits"] = _sum([row["credits"], job["credits"]])
        if not job["reused"]:
            row["estimate_usd"] = _sum([row["estimate_usd"], job["estimate"]["usd"]])
            row["estimate_credits"] = _sum([row["estimate_credits"], job["estimate"]["credits"]])
            if job["status"] == JobStatus.SUCCEEDED:
                ran[at].append(job)
    for at, row in rows.items():
        own = ran[at]
        images = sum(len(j["outputs"]) for j in own)
        usd = _sum(j["cost_usd"] for j in own)
        row["usd_per_image"] = round(usd / images, 9) if images and usd else None
        row["latency"] = _latency([j["times"]["duration_seconds"] for j in own])
    return list(rows.values())


def _latency(durations: Iterable[float | None]) -> dict[str, Any] | None:
    """Median, 90th percentile (nearest rank) and slowest of ``durations``; None if none."""
    known = sorted(d for d in durations if d is not None)
    if not known:
        return None
    n = len(known)
    median = known[n // 2] if n % 2 else (known[n // 2 - 1] + known[n // 2]) / 2
    p90 = known[max(0, -(-9 * n // 10) - 1)]
    return {"jobs": n, "median_s": round(median, 3), "p90_s": round(p90, 3),
            "max_s": round(known[-1], 3)}


def _totals(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    by_status = dict.fromkeys(STATUSES, 0)
    for job in jobs:
        by_status[job["status"]] += 1
    ran = [j for j in jobs if not j["reused"]]
    return {
        "jobs": len(jobs),
        "by_status": by_status,
        "succeeded": by_status[JobStatus.SUCCEEDED],
        "failed": by_status[JobStatus.FAILED],
        "reused": sum(1 for j in jobs if j["reused"]),
        "from_store": sum(1 for j in jobs if j.get("from_store")),
        "images": sum(len(j["outputs"]) for j in jobs),
        "bytes": sum(o["bytes"] for j in jobs for o in j["outputs"]),
        "cost_usd": _sum(j["cost_usd"] for j in jobs),
        "estimated_usd": _sum(j["cost_usd"] for j in jobs if j["cost_estimated"]),
        "credits": _sum(j["credits"] for j in jobs),
        "estimate": {
            "images": sum(j["estimate"]["images"] for j in ran),
            "usd": _sum(j["estimate"]["usd"] for j in ran),
            "credits": _sum(j["estimate"]["credits"] for j in ran),
        },
        "by_model": _by_model(jobs),
        "ran_on_after_cancel": {
            "jobs": sum(1 for j in jobs if j["ran_on_after_cancel"]),
            "cost_usd": _sum(j["cost_usd"] for j in jobs if j["ran_on_after_cancel"]),
            "credits": _sum(j["credits"] for j in jobs if j["ran_on_after_cancel"]),
        },
    }


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of every secret (in keys and strings) masked."""
    masks = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len,
                   reverse=True)
    if not masks:
        return value

    def scrub(text: str) -> str:
        for secret in masks:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return scrub(node)
        if isinstance(node, Mapping):
            return {scrub(str(k)): walk(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        return node

    return walk(value)


def build_report(
    records: RunRecords,
    *,
    secrets: Iterable[str] = (),
    environment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report.json document for ``records``.

    Costs are what the providers reported: a reused job costs nothing in this run (its
    ``reused_from`` names the run that paid). ``totals.cost_usd`` and ``totals.credits``
    are the sums of the jobs' own figures; the estimate covers the jobs this run sent.
    Every string equal to or containing one of ``secrets`` is masked.
    """
    meta = records.meta
    jobs = [_job(record) for record in records.jobs]
    started, finished = iso_utc(meta.started_at), iso_utc(meta.finished_at)
    axes = list(dict.fromkeys(meta.axes))
    for job in jobs:  # axes a job has that the manifest order did not list: keep them, last
        for name in job["axes"]:
            if name not in axes:
                axes.append(name)
    report = {
        "report_version": REPORT_VERSION,
        "tool": {"name": TOOL_NAME, "version": __version__},
        "environment": _plain(environment if environment is not None
                              else current_environment()),
        "run": {
            "id": meta.run_id,
            "name": meta.name,
            "description": meta.description,
            "started_at": started,
            "finished_at": finished,
            "duration_seconds": _seconds_between(started, finished),
            "emulated": meta.emulated,
            "emulated_providers": list(meta.emulated_providers),
            "providers": {name: dict(origin) for name, origin in sorted(meta.providers.items())},
            "store": dict(meta.store) if meta.store is not None else None,
        },
        "manifest": {
            "path": meta.manifest_path,
            "sha256": meta.manifest_sha256,
            "copy": meta.manifest_copy,
        },
        "axes": axes,
        "totals": _totals(jobs),
        "jobs": jobs,
    }
    return redact(report, secrets)
