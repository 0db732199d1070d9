"""The lockfile: ``<manifest stem>.lock.json`` beside the manifest.

It pins, for every job of the manifest's current plan, which outputs were produced, by
which run, at what cost — so a change shows up as a small git diff::

    {"version": 1, "manifest": "autumn-hero.yaml",
     "jobs": {"<job key>": {"name", "model", "outputs": [{"path", "sha256", "bytes"}],
                            "run_id", "cost_usd", "credits"[, "from_store"]}}}

Output paths are relative to the run directory of ``run_id``. Merging rules
(:func:`merge_lock`): the jobs a run succeeded with (ran or reused) replace their entries;
entries of other jobs still in the plan stay; jobs no longer in the plan are dropped.
Emulated outputs never enter a lockfile: a rehearsal is not a manifest's result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner.errors import RunDirError
from runner.files import atomic_write_text
from runner.report.cache import output_is_emulated

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock.json"


def lock_path_for(manifest_path: str | Path) -> Path:
    """``manifests/autumn-hero.yaml`` → ``manifests/autumn-hero.lock.json``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + LOCK_SUFFIX)


def empty_lock(manifest_name: str) -> dict[str, Any]:
    return {"version": LOCK_VERSION, "manifest": manifest_name, "jobs": {}}


def entry_from_job(job: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """A lock entry for one succeeded job of a report (``"from_store": true`` when its
    outputs were placed from the shared store: ``run_id`` is the run that made them)."""
    entry = {
        "name": job["name"],
        "model": job["model"],
        "outputs": [{"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"]}
                    for o in job["outputs"]],
        "run_id": job["reused_from"] if job["reused"] and job["reused_from"] else run_id,
        "cost_usd": job["cost_usd"],
        "credits": job["credits"],
    }
    if job.get("from_store"):
        entry["from_store"] = True
    return entry


def merge_lock(lock: Mapping[str, Any] | None, report: Mapping[str, Any],
               plan_keys: Iterable[str], manifest_name: str | None = None) -> dict[str, Any]:
    """The lock after ``report``'s run, for a plan of ``plan_keys``. Pure.

    A reused job whose key the lock already holds keeps its entry (the run that paid for
    it, and what it cost); otherwise its entry names the run it was reused from."""
    keys = set(plan_keys)
    name = manifest_name or (lock or {}).get("manifest") or Path(report["manifest"]["path"]).name
    old_jobs: Mapping[str, Any] = (lock or {}).get("jobs", {})
    jobs: dict[str, Any] = {k: v for k, v in old_jobs.items() if k in keys}
    for job in report["jobs"]:
        key = job["key"]
        if key not in keys or job["status"] != "succeeded" or not job["outputs"]:
            continue
        if output_is_emulated(report, job):
            continue
        if job["reused"] and key in jobs:
            continue
        jobs[key] = entry_from_job(job, report["run"]["id"])
    # which package (and version) served each provider of the locked jobs: kept per provider,
    # the newest run that locked a job of it wins
    providers = {p: v for p, v in (lock or {}).get("providers", {}).items()}
    used = {j["provider"] for j in report["jobs"] if j["key"] in jobs
            and jobs[j["key"]].get("run_id") == report["run"]["id"] and "provider" in j}
    for provider in sorted(used):
        origin = report["run"].get("providers", {}).get(provider)
        if origin:
            providers[provider] = {"distribution": origin.get("distribution"),
                                   "version": origin.get("version")}
    providers = {p: v for p, v in providers.items()
                 if any(e["model"].startswith(p + "/") for e in jobs.values())}
    doc: dict[str, Any] = {"version": LOCK_VERSION, "manifest": name, "jobs": jobs}
    if providers:
        doc["providers"] = dict(sorted(providers.items()))
    return doc


def render_lock(lock: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(lock, indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"


def read_lock(path: str | Path) -> dict[str, Any] | None:
    """The lock at ``path``, or None when there is none. A damaged one is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        lock = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}:{exc.lineno}:{exc.colno}: lockfile is not valid JSON "
                          f"({exc.msg}); delete it to start a new one") from None
    if (not isinstance(lock, dict) or lock.get("version") != LOCK_VERSION
            or not isinstance(lock.get("jobs"), dict)):
        raise RunDirError(f"{path}: not a version {LOCK_VERSION} seedbatch lockfile; "
                          "delete it to start a new one")
    return lock


def update_lock(path: str | Path, report: Mapping[str, Any],
                plan_keys: Iterable[str]) -> dict[str, Any]:
    """Merge ``report`` into the lockfile at ``path`` and write it (only if it changed; never
    a new file with nothing in it)."""
    path = Path(path)
    old = read_lock(path)
    lock = merge_lock(old, report, plan_keys, Path(report["manifest"]["path"]).name)
    if old is None and not lock["jobs"]:
        return lock  # nothing to pin (a rehearsal, or nothing succeeded): no file
    text = render_lock(lock)
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current != text:
        atomic_write_text(path, text)
    return lock
