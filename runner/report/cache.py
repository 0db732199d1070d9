"""Which jobs of a plan already have good outputs from an earlier run.

Every job key of the current plan is classified as:

* ``cached`` — an earlier run (newest first) or the lockfile lists succeeded outputs for
  this exact key, and every file is present with its recorded size and sha256;
* ``changed`` — not cached, and a job of the same name existed with a different key (the
  prompt, parameters, model or reference images changed);
* ``new`` — anything else (including a key whose earlier outputs are gone or altered, or
  were made by the other kind of endpoint: ``reason`` says so).

Reuse never crosses between kinds of endpoint: outputs an emulator made (``--emulate``, or
a base URL that points at a ``seedbatch emulate`` server) are reused only by runs that talk
to an emulator for that provider, and real outputs only by real runs. A rehearsal never
passes for a real run, and a real output is never thrown in with placeholders.

Sources are report.json files found under a runs directory (:func:`scan_runs`) and the
lockfile (whose entries name the run that holds the files). :func:`reuse_lookup` is the
executor's hook: job → the verified files to link into a new run, or None.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.jobs import sha256_file
from runner.outputs import ReusedOutput, ReuseHit, ReuseLookup

Status = Literal["cached", "new", "changed"]


class KeyedJob(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def provider(self) -> str: ...


@dataclass(frozen=True, slots=True)
class CachedOutput:
    path: Path  # where the file is now
    rel: str  # its path relative to the run directory that holds it
    sha256: str
    bytes: int
    index: int = 0
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    url: str | None = None


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
    for position, output in enumerate(outputs):
        rel = str(output["path"])
        path = run_dir / rel
        size = output.get("bytes")
        if not hashes.matches(path, str(output["sha256"]), size):
            return None
        found.append(CachedOutput(
            path, rel, str(output["sha256"]), int(size or 0),
            index=int(output.get("index", position)),
            content_type=output.get("content_type") or _guess_type(path),
            width=output.get("width"), height=output.get("height"), url=output.get("url")))
    return tuple(found)


def _guess_type(path: Path) -> str | None:
    return mimetypes.guess_type(path.name)[0]


def output_is_emulated(report: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether a report's job was produced (or, if reused, first made) by an emulator.

    The job's own ``emulated`` flag when the report has one; else the run's list of
    emulated providers; else (reports of seedbatch 0.1) the run's ``emulated`` flag."""
    if isinstance(job.get("emulated"), bool):
        return bool(job["emulated"])
    run = report.get("run", {})
    providers = run.get("emulated_providers")
    if isinstance(providers, list):
        return job.get("provider") in providers
    return bool(run.get("emulated"))


#: Why a job with earlier outputs is new: they were made by the other kind of endpoint.
ONLY_EMULATED = "only emulated outputs so far (a rehearsal): a real run submits it"
ONLY_REAL = "only real outputs so far: an emulated run does not reuse them"

_Candidate = tuple[Path, str, Sequence[Mapping[str, Any]], bool]  # dir, id, outputs, emulated


class OutputCache:
    """Earlier runs (newest first) and a lockfile, indexed by job key and job name; each
    file is hashed at most once however many jobs are asked about.

    ``emulated_providers`` are the providers the asking run reaches through an emulator:
    for a job of one of those only emulated outputs are reused, for any other job only
    real ones."""

    def __init__(self, runs: Sequence[EarlierRun] = (),
                 lock: Mapping[str, Any] | None = None,
                 emulated_providers: Collection[str] = ()) -> None:
        self._hashes = _Hashes()
        self._emulated = frozenset(emulated_providers)
        run_by_id = {run.run_id: run for run in reversed(runs)}  # newest wins a duplicate id
        # (run dir, run id, outputs, emulated) per key: newest run first, then the lockfile.
        self._candidates: dict[str, list[_Candidate]] = {}
        self._names: dict[str, set[str]] = {}
        for run in runs:
            for job in run.report.get("jobs", []):
                self._names.setdefault(job.get("name", ""), set()).add(job.get("key", ""))
                if job.get("status") == "succeeded" and job.get("outputs"):
                    self._candidates.setdefault(job["key"], []).append(
                        (run.run_dir, run.run_id, job["outputs"],
                         output_is_emulated(run.report, job)))
        for key, entry in (lock or {}).get("jobs", {}).items():
            self._names.setdefault(entry.get("name", ""), set()).add(key)
            holder = run_by_id.get(str(entry.get("run_id")))
            if holder is not None and entry.get("outputs"):
                same: Mapping[str, Any] = next(
                    (j for j in holder.report.get("jobs", []) if j.get("key") == key), {})
                emulated = bool(entry.get("emulated")) or output_is_emulated(holder.report,
                                                                             same)
                self._candidates.setdefault(key, []).append(
                    (holder.run_dir, holder.run_id, entry["outputs"], emulated))

    def decide(self, key: str, name: str, provider: str | None = None) -> CacheDecision:
        """``provider`` is the job's (it says which kind of earlier output may be reused;
        without it, only real outputs are)."""
        tried = self._candidates.get(key, [])
        want_emulated = provider is not None and provider in self._emulated
        other_kind = False
        for run_dir, run_id, outputs, emulated in tried:
            if emulated != want_emulated:
                other_kind = True
                continue
            verified = _verified(run_dir, outputs, self._hashes)
            if verified is not None:
                return CacheDecision(key, name, "cached", run_id, run_dir, verified,
                                     reason=f"outputs of run {run_id}")
        known = self._names.get(name, set())
        before = tuple(sorted(known - {key}))
        if before and key not in known:
            return CacheDecision(key, name, "changed", previous_keys=before,
                                 reason="the job's request changed")
        if other_kind:
            reason = ONLY_REAL if want_emulated else ONLY_EMULATED
        elif tried:
            reason = "earlier outputs are missing or altered"
        else:
            reason = "no earlier outputs"
        return CacheDecision(key, name, "new", reason=reason)


def classify(
    jobs: Iterable[KeyedJob],
    runs: Sequence[EarlierRun] = (),
    lock: Mapping[str, Any] | None = None,
    emulated_providers: Collection[str] = (),
) -> dict[str, CacheDecision]:
    """A decision for every job of the plan, by key (plan order kept), for a run that
    reaches ``emulated_providers`` through an emulator and the others for real."""
    cache = OutputCache(runs, lock, emulated_providers)
    return {job.key: cache.decide(job.key, job.name, job.provider) for job in jobs}


def classify_in(jobs: Iterable[KeyedJob], runs_dir: str | Path,
                lock: Mapping[str, Any] | None = None,
                emulated_providers: Collection[str] = ()) -> dict[str, CacheDecision]:
    """:func:`classify` against every run found under ``runs_dir``."""
    return classify(jobs, scan_runs(runs_dir), lock, emulated_providers)


def reuse_lookup(runs_dir: str | Path, lock: Mapping[str, Any] | None = None,
                 emulated_providers: Collection[str] = ()) -> ReuseLookup:
    """For the executor: ``job → ReuseHit | None`` over the runs under ``runs_dir``, for a
    run that reaches ``emulated_providers`` through an emulator.

    A hit's ``origin`` is the id of the run whose verified files are reused (the run
    directory's name); the executor links or copies them into the new run."""
    cache = OutputCache(scan_runs(runs_dir), lock, emulated_providers)

    def lookup(job: KeyedJob) -> ReuseHit | None:
        decision = cache.decide(job.key, job.name, job.provider)
        if decision.status != "cached" or not decision.outputs:
            return None
        return ReuseHit(str(decision.run_id), tuple(
            ReusedOutput(source=o.path, index=o.index, bytes=o.bytes, sha256=o.sha256,
                         content_type=o.content_type or "application/octet-stream",
                         width=o.width, height=o.height, url=o.url)
            for o in decision.outputs))

    return lookup
