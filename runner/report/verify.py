"""``seedbatch verify``: re-hash every output (and the manifest copy) against report.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import RunDirError
from runner.jobs import sha256_file
from runner.rundir import JOURNAL_NAME, REPORT_JSON


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # relative to the run directory
    kind: str  # "missing" or "changed"
    expected_sha256: str
    expected_bytes: int | None
    actual_sha256: str | None = None
    actual_bytes: int | None = None

    def describe(self) -> str:
        if self.kind == "missing":
            return f"missing  {self.path} (expected sha256 {self.expected_sha256})"
        size = ""
        if self.expected_bytes is not None:
            size = f", {self.expected_bytes} → {self.actual_bytes} bytes"
        return (f"changed  {self.path} (expected sha256 {self.expected_sha256}, "
                f"actual {self.actual_sha256}{size})")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    checked: int
    problems: tuple[Problem, ...]

    @property
    def intact(self) -> bool:
        return not self.problems


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """report.json of a run directory, or RunDirError saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    path = run_dir / REPORT_JSON
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = (f"`seedbatch report {run_dir}` writes it from the journal"
                if (run_dir / JOURNAL_NAME).is_file() else "pass a folder under runs/")
        raise RunDirError(f"{run_dir}: no {REPORT_JSON} here; {hint}") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(report, dict) or not isinstance(report.get("jobs"), list):
        raise RunDirError(f"{path}: not a seedbatch report")
    return report


def _check(run_dir: Path, rel: str, sha256: str, size: int | None) -> Problem | None:
    path = run_dir / rel
    if not path.is_file():
        return Problem(rel, "missing", sha256, size)
    actual = sha256_file(path)
    actual_size = path.stat().st_size
    if actual != sha256 or (size is not None and actual_size != size):
        return Problem(rel, "changed", sha256, size, actual, actual_size)
    return None


def verify_report(run_dir: str | Path, report: Mapping[str, Any]) -> VerifyResult:
    """Check every output listed in ``report`` and the manifest copy under ``run_dir``."""
    run_dir = Path(run_dir)
    wanted: dict[str, tuple[str, int | None]] = {}
    manifest = report.get("manifest") or {}
    if manifest.get("copy") and manifest.get("sha256"):
        wanted[manifest["copy"]] = (manifest["sha256"], None)
    for job in report["jobs"]:
        for output in job.get("outputs", []):
            wanted[output["path"]] = (output["sha256"], output.get("bytes"))
    problems = [p for rel, (sha, size) in wanted.items()
                if (p := _check(run_dir, rel, sha, size)) is not None]
    return VerifyResult(len(wanted), tuple(problems))


def verify_run(run_dir: str | Path) -> VerifyResult:
    return verify_report(run_dir, load_report(run_dir))
