"""The run directory: its name, its files, and the lock that keeps it to one process.

::

    <runs>/<UTC YYYYmmddTHHMMSSZ>-<name>-<short id>/
      manifest.yaml     byte-for-byte copy of what ran
      plan.json         the expanded jobs (what ``resume`` submits), output names
      journal.sqlite    write-ahead state (see journal.py)
      run.lock          held (fcntl) by the process running it; holds its pid
      outputs/…         images
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from runner.errors import ConfigError, ManifestError, RunDirError
from runner.jobs import Budget, Estimate, ImageRef, Job, Limits, Plan, Price

MANIFEST_NAME = "manifest.yaml"
PLAN_NAME = "plan.json"
JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "run.lock"
OUTPUTS_DIR = "outputs"
PLAN_FORMAT = 1
OUTPUT_EXTS = ("png", "jpg", "webp")


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
    return (path / JOURNAL_NAME).is_file() and (path / PLAN_NAME).is_file()


def check_run_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"{p}: no such directory")
    if not is_run_dir(p):
        raise RunDirError(f"{p}: not a run directory (no {JOURNAL_NAME} and {PLAN_NAME})")
    return p


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

def job_to_record(job: Job, names: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    doc = job.to_dict()
    doc["price"] = {"usd_per_image": job.price.usd_per_image,
                    "credits_per_image": job.price.credits_per_image}
    doc["line"] = job.line
    doc["output_names"] = {k: dict(v) for k, v in names.items()}
    return doc


def job_from_record(doc: Mapping[str, Any]) -> Job:
    est = doc.get("estimate") or {}
    price = doc.get("price") or {}
    return Job(
        key=doc["key"], name=doc["name"], alias=doc.get("alias", ""), model=doc["model"],
        provider=doc["provider"], prompt=doc["prompt"], params=dict(doc.get("params") or {}),
        images=tuple(ImageRef(ref=i.get("ref", ""), url=i.get("url"), path=i.get("path"),
                              sha256=i.get("sha256")) for i in doc.get("images") or []),
        index=int(doc.get("index", 0)), axes=dict(doc.get("axes") or {}),
        price=Price(price.get("usd_per_image"), price.get("credits_per_image")),
        estimate=Estimate(int(est.get("images", 0)), float(est.get("usd", 0.0)),
                          float(est.get("credits", 0.0))),
        line=int(doc.get("line", 0)),
    )


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

    def job(self, key: str) -> Job:
        for job in self.jobs:
            if job.key == key:
                return job
        raise KeyError(key)


def plan_document(plan: Plan, jobs: Sequence[Job],
                  names: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, Any]:
    est = Estimate()
    for job in jobs:
        est = est + job.estimate
    return {
        "format": PLAN_FORMAT,
        "name": plan.name,
        "manifest": {"path": str(plan.manifest_path), "sha256": plan.manifest_sha256},
        "limits": {name: {"concurrency": lim.concurrency,
                          "requests_per_minute": lim.requests_per_minute}
                   for name, lim in plan.limits.items()},
        "budget": {"max_usd": plan.budget.max_usd, "max_credits": plan.budget.max_credits},
        "providers": {name: {k: v for k, v in dict(cfg).items() if k == "base_url"}
                      for name, cfg in plan.providers.items()},
        "estimate": {"images": est.images, "usd": est.usd, "credits": est.credits},
        "jobs": [job_to_record(job, names[job.key]) for job in jobs],
    }


def read_plan(run_dir: Path) -> PlanDoc:
    path = run_dir / PLAN_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot be read ({exc})") from None
    if doc.get("format") != PLAN_FORMAT:
        raise RunDirError(f"{path}: plan format {doc.get('format')!r}, this seedbatch reads "
                          f"{PLAN_FORMAT}")
    jobs = tuple(job_from_record(j) for j in doc["jobs"])
    budget = doc.get("budget") or {}
    return PlanDoc(
        name=doc.get("name", run_dir.name),
        jobs=jobs,
        output_names={j["key"]: j.get("output_names") or {} for j in doc["jobs"]},
        limits={name: Limits(v.get("concurrency"), v.get("requests_per_minute"))
                for name, v in (doc.get("limits") or {}).items()},
        budget=Budget(budget.get("max_usd"), budget.get("max_credits")),
        providers=doc.get("providers") or {},
        manifest_path=(doc.get("manifest") or {}).get("path", ""),
        manifest_sha256=(doc.get("manifest") or {}).get("sha256", ""),
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
