"""The runs under a folder, as the viewer shows them.

:class:`RunsFolder` is the shell: it finds run directories, reads each one's report.json —
or, for a run still going (its ``run.lock`` held) or one that never finished, builds the
report from its journal through :mod:`runner.report.source` — and remembers each by a
stamp of its files' modification times, so polling a large folder costs a ``stat`` per run.
It also resolves a requested file to a path inside its run directory, or refuses.

:func:`run_summary` and :func:`gallery` are pure: a report (and the picks) → the JSON the
page reads.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from runner.errors import ConfigError, RunDirError
from runner.report import build_report, env_secrets
from runner.report.cache import output_is_emulated
from runner.report.grid import MODEL_AXIS, axis_names
from runner.report.source import records_from_journal
from runner.report.thumbs import thumbnail
from runner.review.picks import keys_by_name, picks_path_for, read_picks, verdict_for
from runner.rundir import JOURNAL_NAME, OUTPUTS_DIR, REPORT_JSON, RunLock, has_record

THUMB_PX = 320


@dataclass(frozen=True)
class LoadedRun:
    run_id: str
    run_dir: Path
    report: Mapping[str, Any]
    running: bool
    stamp: str  # changes whenever the run's record changes


def run_summary(report: Mapping[str, Any], running: bool, stamp: str) -> dict[str, Any]:
    """One line of the runs list. Pure."""
    run = report.get("run", {})
    totals = report.get("totals", {})
    return {
        "id": run.get("id"),
        "name": run.get("name"),
        "description": run.get("description"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "jobs": totals.get("jobs", 0),
        "succeeded": totals.get("succeeded", 0),
        "failed": totals.get("failed", 0),
        "images": totals.get("images", 0),
        "cost_usd": totals.get("cost_usd", 0.0),
        "credits": totals.get("credits", 0.0),
        "emulated": bool(run.get("emulated")),
        "manifest": report.get("manifest", {}).get("path"),
        "running": running,
        "stamp": stamp,
    }


def job_axes(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job's values on every axis of the grid: its matrix values and its model alias."""
    axes = dict(job.get("axes", {}))
    axes.setdefault(MODEL_AXIS, job.get("alias"))
    return axes


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           ensure_ascii=False)


def gallery(report: Mapping[str, Any], picks: Mapping[str, Any], running: bool = False,
            stamp: str = "") -> dict[str, Any]:
    """Everything the gallery of one run shows: its jobs (spec, status, cost), each output
    with the verdict the picks file holds for it, and the axes to filter and pivot by. Pure."""
    by_name = keys_by_name(picks)
    jobs = []
    for job in report.get("jobs", []):
        key, name = job["key"], job["name"]
        outputs = [{
            "index": out["index"], "path": out["path"], "bytes": out.get("bytes"),
            "width": out.get("width"), "height": out.get("height"),
            "sha256": out.get("sha256"),
            **verdict_for(picks, key, name, out["index"], by_name).to_dict(),
        } for out in job.get("outputs", [])]
        jobs.append({
            "key": key, "name": name, "alias": job.get("alias"), "model": job.get("model"),
            "provider": job.get("provider"), "prompt": job.get("prompt"),
            "params": job.get("params", {}), "inputs": job.get("inputs", []),
            "axes": {axis: _value_text(v) for axis, v in job_axes(job).items()},
            "index": job.get("index", 0), "status": job.get("status"),
            "error": job.get("error"), "cost_usd": job.get("cost_usd"),
            "credits": job.get("credits"), "task_id": job.get("task_id"),
            "reused": job.get("reused", False),
            "emulated": output_is_emulated(report, job), "outputs": outputs,
        })
    return {
        "run": run_summary(report, running, stamp),
        "axes": axis_names(report),
        "jobs": jobs,
    }


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _stamp(run_dir: Path) -> str:
    parts = (run_dir / REPORT_JSON, run_dir / JOURNAL_NAME,
             run_dir / (JOURNAL_NAME + "-wal"))
    return "-".join(str(_mtime(p)) for p in parts)


class RunsFolder:
    """The run directories directly under ``root``; safe to share between threads."""

    def __init__(self, root: str | Path, thumb_cache: int = 4096) -> None:
        self.root = Path(root)
        self._resolved = self.root.resolve()
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedRun] = {}
        self._thumbs: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._thumb_cache = thumb_cache

    def run_dir(self, run_id: str) -> Path:
        """The directory of ``run_id``: a plain name of a folder directly under the root
        (no separators, no ``..``, not a symlink leading elsewhere), holding a record."""
        if (not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id
                or "\x00" in run_id):
            raise RunDirError(f"no run named {run_id!r}")
        path = self.root / run_id
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise RunDirError(f"no run named {run_id!r}") from None
        if resolved.parent != self._resolved or not has_record(resolved):
            raise RunDirError(f"no run named {run_id!r}")
        return resolved

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            try:
                self.run_dir(child.name)
            except RunDirError:
                continue
            found.append(child.name)
        return found

    def load(self, run_id: str) -> LoadedRun:
        """The run's report: report.json when it is finished, else built from its journal."""
        run_dir = self.run_dir(run_id)
        stamp = _stamp(run_dir)
        running = RunLock(run_dir).is_held()
        with self._lock:
            cached = self._loaded.get(run_id)
        if cached is not None and cached.stamp == stamp and cached.running == running:
            return cached
        report: Mapping[str, Any] | None = None
        if not running and (run_dir / REPORT_JSON).is_file():
            try:
                report = json.loads((run_dir / REPORT_JSON).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                report = None
        if report is None:
            if not (run_dir / JOURNAL_NAME).is_file():
                raise RunDirError(f"{run_id}: report.json is unreadable and there is no "
                                  f"journal to build it from")
            report = build_report(records_from_journal(run_dir), secrets=env_secrets())
        loaded = LoadedRun(run_id, run_dir, report, running, stamp)
        with self._lock:
            self._loaded[run_id] = loaded
        return loaded

    def summaries(self) -> list[dict[str, Any]]:
        """Every readable run, newest first (start time, then directory name)."""
        rows = []
        for run_id in self.ids():
            try:
                loaded = self.load(run_id)
            except (RunDirError, ConfigError, OSError):
                continue
            row = run_summary(loaded.report, loaded.running, loaded.stamp)
            row["id"] = run_id
            rows.append(row)
        rows.sort(key=lambda r: (str(r.get("started_at") or ""), r["id"]), reverse=True)
        return rows

    def gallery(self, run_id: str) -> dict[str, Any]:
        loaded = self.load(run_id)
        doc = gallery(loaded.report, self.picks_of(loaded.report), loaded.running,
                      loaded.stamp)
        doc["run"]["id"] = run_id
        path = self.picks_file(loaded.report)
        doc["picks_file"] = str(path) if path is not None else None
        return doc

    @staticmethod
    def picks_file(report: Mapping[str, Any]) -> Path | None:
        manifest = report.get("manifest", {}).get("path")
        return picks_path_for(manifest) if manifest else None

    def picks_of(self, report: Mapping[str, Any]) -> dict[str, Any]:
        path = self.picks_file(report)
        if path is None:
            return {"jobs": {}}
        return read_picks(path)

    # -- files ---------------------------------------------------------------------------

    def output_file(self, run_id: str, rel: str) -> Path:
        """``rel`` (a path under the run's outputs/) as a regular file inside the run
        directory once every symlink is followed; anything else is a RunDirError."""
        run_dir = self.run_dir(run_id)
        pure = PurePosixPath(rel)
        if (not rel or "\\" in rel or "\x00" in rel or pure.is_absolute()
                or ".." in pure.parts or not pure.parts or pure.parts[0] != OUTPUTS_DIR):
            raise RunDirError(f"{rel!r} is not a file of run {run_id}")
        try:
            resolved = (run_dir / pure).resolve(strict=True)
        except (OSError, RuntimeError):
            raise RunDirError(f"{rel!r} is not a file of run {run_id}") from None
        if not resolved.is_relative_to(run_dir) or not resolved.is_file():
            raise RunDirError(f"{rel!r} is not a file of run {run_id}")
        return resolved

    def thumbnail(self, run_id: str, rel: str) -> bytes | None:
        """A JPEG thumbnail of an output (kept in memory, least recently used dropped)."""
        path = self.output_file(run_id, rel)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        image = thumbnail(path, THUMB_PX)
        if image is None:
            return None
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        data = buffer.getvalue()
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > self._thumb_cache:
                self._thumbs.popitem(last=False)
        return data
