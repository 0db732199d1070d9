"""The run directory: its layout, plan.json, the lock that keeps it to one process.

::

    <runs>/<UTC YYYYmmddTHHMMSSZ>-<name>-<short id>/
      manifest.yaml     byte-for-byte copy of what ran                    MANIFEST_NAME
      plan.json         the expanded jobs (what ``resume`` submits),     PLAN_NAME
                        their output names, limits, budget
      journal.sqlite    write-ahead state (runner/execute/journal.py)     JOURNAL_NAME
      run.lock          held (fcntl) by the process running it; its pid   LOCK_NAME
      outputs/…         images                                            OUTPUTS_DIR
      report.json       the run record (runner/report), then              REPORT_JSON
      report.html, grid.png                                               REPORT_HTML, GRID_PNG

Two questions about a folder: :func:`is_run_dir` — can it be resumed, looked at or
cancelled (a journal and a plan)? :func:`has_record` — can a report be shown or checked
(a journal to build one from, or a report.json)? :func:`check_run_dir` and
:func:`check_record_dir` raise :class:`~runner.errors.RunDirError` saying which is missing.

plan.json: :func:`plan_json` (pure) → :func:`create_run_files` writes it with the manifest
copy; :func:`read_plan` reads it back (each job through :mod:`runner.jobrecord`). Besides
the jobs it holds the manifest's description and matrix-axis order, so that the report
needs no second reading of the manifest (plan.json files written before they were added
lack both: ``PlanDoc.axes`` is None).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from runner.errors import ConfigError, ManifestError, RunDirError
from runner.files import atomic_write_bytes, atomic_write_json
from runner.jobrecord import job_from_record, job_to_record
from runner.jobs import Budget, Job, Limits, Plan
from runner.media import OUTPUT_EXTS

MANIFEST_NAME = "manifest.yaml"
PLAN_NAME = "plan.json"
JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "run.lock"
OUTPUTS_DIR = "outputs"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
GRID_PNG = "grid.png"
PLAN_FORMAT = 1


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug[:60] or "run"


def new_run_dir(runs_dir: str | Path, name: str, *, now: datetime | None = None) -> Path:
    """Create (exclusively) and return ``runs_dir/<UTC time>-<name>-<short id>``."""
    runs = Path(runs_dir)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the runs directory {runs}: {exc.strerror}") from None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    for _ in range(10):
        path = runs / f"{stamp}-{_slug(name)}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunDirError(f"could not create a fresh run directory under {runs}")


def is_run_dir(path: Path) -> bool:
    """A run directory that can be resumed, looked at or cancelled: journal and plan."""
    return (path / JOURNAL_NAME).is_file() and (path / PLAN_NAME).is_file()


def check_run_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"{p}: no such directory")
    if not is_run_dir(p):
        raise RunDirError(f"{p}: not a run directory (no {JOURNAL_NAME} and {PLAN_NAME})")
    return p


def has_record(path: Path) -> bool:
    """A run directory whose report can be shown or checked: a journal or a report.json."""
    return path.is_dir() and ((path / JOURNAL_NAME).is_file() or (path / REPORT_JSON).is_file())


def check_record_dir(path: Path) -> Path:
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    if not has_record(path):
        raise RunDirError(f"{path}: not a run directory (no {REPORT_JSON} or {JOURNAL_NAME}); "
                          "pass a folder under runs/")
    return path


# -- output names ----------------------------------------------------------------------------

def safe_relative(name: str, where: str) -> str:
    """``name`` as a POSIX path that stays inside outputs/, or a ManifestError."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or name.strip() == "":
        raise ManifestError(f"output name {name!r} for {where} would leave outputs/")
    return pure.as_posix()


def output_names(plan: Plan, job: Job) -> dict[str, dict[str, str]]:
    """index → extension → path relative to outputs/, for every image the job may return."""
    count = max(1, job.estimate.images)
    names: dict[str, dict[str, str]] = {}
    for index in range(count):
        names[str(index)] = {ext: safe_relative(plan.output_name(job, index, ext), job.name)
                             for ext in OUTPUT_EXTS}
    return names


def output_name_for(names: Mapping[str, Mapping[str, str]], index: int, ext: str) -> str:
    """The name planned for image ``index`` of type ``ext``; an image beyond what was planned
    (a provider returned more than asked) is named after image 0 with ``-<index>`` added."""
    by_ext = names.get(str(index))
    if by_ext and ext in by_ext:
        return by_ext[ext]
    first = names.get("0", {}).get(ext) or f"image.{ext}"
    pure = PurePosixPath(first)
    return (pure.parent / f"{pure.stem}-{index}{pure.suffix}").as_posix()


# -- plan.json --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanDoc:
    """What plan.json holds: enough to resume without the original manifest."""

    name: str
    jobs: tuple[Job, ...]
    output_names: Mapping[str, Mapping[str, Mapping[str, str]]]  # job key → index → ext → name
    limits: Mapping[str, Limits]
    budget: Budget
    providers: Mapping[str, Mapping[str, Any]]
    manifest_path: str
    manifest_sha256: str
    # The manifest's matrix variables in its order, and its description; both None when
    # plan.json predates them (the description is None too when the manifest has none).
    axes: tuple[str, ...] | None = None
    description: str | None = None

    def job(self, key: str) -> Job:
        for job in self.jobs:
            if job.key == key:
                return job
        raise KeyError(key)


def plan_json(plan: Plan, names: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, Any]:
    """plan.json's document for ``plan``; ``names`` are every job's output names. Pure."""
    est = plan.estimate()
    return {
        "format": PLAN_FORMAT,
        "name": plan.name,
        "description": plan.description,
        "manifest": {"path": str(plan.manifest_path), "sha256": plan.manifest_sha256},
        "axes": list(plan.axes),
        "limits": {name: {"concurrency": lim.concurrency,
                          "requests_per_minute": lim.requests_per_minute}
                   for name, lim in plan.limits.items()},
        "budget": {"max_usd": plan.budget.max_usd, "max_credits": plan.budget.max_credits},
        "providers": {name: {k: v for k, v in dict(cfg).items() if k in ("base_url", "realtime")}
                      for name, cfg in plan.providers.items()},
        "estimate": {"images": est.images, "usd": est.usd, "credits": est.credits},
        "jobs": [job_to_record(job, names[job.key]) for job in plan.jobs],
    }


def create_run_files(run_dir: Path, plan: Plan,
                     names: Mapping[str, Mapping[str, Mapping[str, str]]]) -> None:
    """A new run directory's manifest copy, plan.json and (empty) outputs folder."""
    atomic_write_bytes(run_dir / MANIFEST_NAME, plan.manifest_bytes)
    atomic_write_json(run_dir / PLAN_NAME, plan_json(plan, names))
    (run_dir / OUTPUTS_DIR).mkdir(exist_ok=True)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def read_plan(run_dir: Path, *, partial: bool = False) -> PlanDoc:
    """``run_dir``'s plan.json.

    To resume, the plan must be whole: an unreadable file, another format or a job
    record lacking a field is an error. With ``partial`` (the report, which has the rest
    from the journal) a missing plan.json is an empty plan, any format is read, a bare
    list is the list of jobs, and job records without a key are passed over."""
    path = run_dir / PLAN_NAME
    if partial:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            doc = {"jobs": []}
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON "
                              f"({exc.msg})") from None
        if isinstance(doc, list):
            doc = {"jobs": doc}
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs", []), list):
            raise RunDirError(f"{path}: expected a plan with a list of jobs")
        records = [j for j in doc.get("jobs", []) if isinstance(j, dict) and "key" in j]
    else:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: cannot be read ({exc})") from None
        if doc.get("format") != PLAN_FORMAT:
            raise RunDirError(f"{path}: plan format {doc.get('format')!r}, this seedbatch "
                              f"reads {PLAN_FORMAT}")
        records = doc["jobs"]
    budget = _mapping(doc.get("budget"))
    manifest = _mapping(doc.get("manifest"))
    axes = doc.get("axes")
    description = doc.get("description")
    return PlanDoc(
        name=str(doc.get("name") or ""),
        jobs=tuple(job_from_record(j, partial=partial) for j in records),
        output_names={j["key"]: j.get("output_names") or {} for j in records},
        limits={name: Limits(v.get("concurrency"), v.get("requests_per_minute"))
                for name, v in _mapping(doc.get("limits")).items() if isinstance(v, Mapping)},
        budget=Budget(budget.get("max_usd"), budget.get("max_credits")),
        providers=_mapping(doc.get("providers")),
        manifest_path=str(manifest.get("path") or ""),
        manifest_sha256=str(manifest.get("sha256") or ""),
        axes=tuple(str(a) for a in axes) if isinstance(axes, list) else None,
        description=description if isinstance(description, str) else None,
    )


# -- the lock ---------------------------------------------------------------------------------

class RunLock:
    """An exclusive ``fcntl`` lock on ``run.lock`` (released by the kernel if the process
    dies, even by ``kill -9``); the file holds the owner's pid."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder_pid()
            who = f"process {pid}" if pid else "another process"
            raise RunDirError(f"{self.path.parent} is being run by {who}; wait for it, or stop "
                              f"it with: seedbatch cancel {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder_pid(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def is_held(self) -> bool:
        """Whether some process (this one included) holds the lock right now."""
        if self._fd is not None:
            return True
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)
