"""Which jobs of a plan already have good outputs from an earlier run.

Every job key of the current plan is classified as:

* ``cached`` — an earlier run (newest first) or the lockfile lists succeeded outputs for
  this exact key, and every file is present with its recorded size and sha256;
* ``changed`` — not cached, and a job of the same name existed with a different key (the
  prompt, parameters, model or reference images changed);
* ``new`` — anything else (including a key whose earlier outputs are gone or altered:
  ``reason`` says so).

Sources are report.json files found under a runs directory (:func:`scan_runs`) and the
lockfile (whose entries name the run that holds the files).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.jobs import sha256_file

Status = Literal["cached", "new", "changed"]


class KeyedJob(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class CachedOutput:
    path: Path  # where the file is now
    rel: str  # its path relative to the run directory that holds it
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheDecision:
    key: str
    name: str
    status: Status
    run_id: str | None = None  # the run whose files are reused
    run_dir: Path | None = None
    outputs: tuple[CachedOutput, ...] = ()
    previous_keys: tuple[str, ...] = ()  # for "changed": keys this name had before
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EarlierRun:
    run_dir: Path
    report: Mapping[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.report.get("run", {}).get("id", self.run_dir.name))


def _when(report: Mapping[str, Any]) -> float:
    run = report.get("run", {})
    text = run.get("finished_at") or run.get("started_at")
    if not text:
        return float("-inf")
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")


def scan_runs(runs_dir: str | Path) -> list[EarlierRun]:
    """Every readable report.json directly under ``runs_dir``'s subfolders, newest first.

    Newest means the latest finish (or start) time, then the directory name (run
    directories start with their UTC time). Unreadable reports are passed over."""
    runs_dir = Path(runs_dir)
    found: list[EarlierRun] = []
    if not runs_dir.is_dir():
        return found
    for report_path in runs_dir.glob("*/report.json"):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(report, dict) and isinstance(report.get("jobs"), list):
            found.append(EarlierRun(report_path.parent, report))
    found.sort(key=lambda r: (_when(r.report), r.run_dir.name), reverse=True)
    return found


class _Hashes:
    """File checks, each file hashed at most once per classification."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, str] | None] = {}

    def matches(self, path: Path, sha256: str, size: int | None) -> bool:
        if path not in self._seen:
            try:
                actual_size = path.stat().st_size
            except OSError:
                self._seen[path] = None
            else:
                if size is not None and actual_size != size:
                    self._seen[path] = (actual_size, "")
                else:
                    self._seen[path] = (actual_size, sha256_file(path))
        got = self._seen[path]
        if got is None:
            return False
        return got[1] == sha256 and (size is None or got[0] == size)


def _verified(run_dir: Path, outputs: Sequence[Mapping[str, Any]],
              hashes: _Hashes) -> tuple[CachedOutput, ...] | None:
    found = []
    for output in outputs:
        rel = str(output["path"])
        path = run_dir / rel
        size = output.get("bytes")
        if not hashes.matches(path, str(output["sha256"]), size):
            return None
        found.append(CachedOutput(path, rel, str(output["sha256"]), int(size or 0)))
    return tuple(found)


def classify(
    jobs: Iterable[KeyedJob],
    runs: Sequence[EarlierRun] = (),
    lock: Mapping[str, Any] | None = None,
) -> dict[str, CacheDecision]:
    """A decision for every job of the plan, by key (plan order kept)."""
    hashes = _Hashes()
    run_by_id = {run.run_id: run for run in reversed(runs)}  # newest wins a duplicate id
    lock_jobs: Mapping[str, Any] = (lock or {}).get("jobs", {})

    # (run dir, run id, outputs) candidates per key, newest run first, then the lockfile.
    candidates: dict[str, list[tuple[Path, str, Sequence[Mapping[str, Any]]]]] = {}
    names: dict[str, set[str]] = {}
    for run in runs:
        for job in run.report.get("jobs", []):
            names.setdefault(job.get("name", ""), set()).add(job.get("key", ""))
            if job.get("status") == "succeeded" and job.get("outputs"):
                candidates.setdefault(job["key"], []).append(
                    (run.run_dir, run.run_id, job["outputs"]))
    for key, entry in lock_jobs.items():
        names.setdefault(entry.get("name", ""), set()).add(key)
        holder = run_by_id.get(str(entry.get("run_id")))
        if holder is not None and entry.get("outputs"):
            candidates.setdefault(key, []).append(
                (holder.run_dir, holder.run_id, entry["outputs"]))

    decisions: dict[str, CacheDecision] = {}
    for job in jobs:
        key, name = job.key, job.name
        tried = candidates.get(key, [])
        for run_dir, run_id, outputs in tried:
            verified = _verified(run_dir, outputs, hashes)
            if verified is not None:
                decisions[key] = CacheDecision(key, name, "cached", run_id, run_dir, verified,
                                               reason=f"outputs of run {run_id}")
                break
        else:
            reason = ("earlier outputs are missing or altered" if tried
                      else "no earlier outputs")
            before = tuple(sorted(names.get(name, set()) - {key}))
            if before and key not in names.get(name, set()):
                decisions[key] = CacheDecision(key, name, "changed", previous_keys=before,
                                               reason="the job's request changed")
            else:
                decisions[key] = CacheDecision(key, name, "new", reason=reason)
    return decisions


def classify_in(jobs: Iterable[KeyedJob], runs_dir: str | Path,
                lock: Mapping[str, Any] | None = None) -> dict[str, CacheDecision]:
    """:func:`classify` against every run found under ``runs_dir``."""
    return classify(jobs, scan_runs(runs_dir), lock)
