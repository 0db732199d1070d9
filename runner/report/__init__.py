"""The run record: report.json, report.html, grid.png and the lockfile.

:func:`finalize` is what the executor calls when a run (or a resume) ends::

    journal + plan.json ─records_from_journal─▶ RunRecords
        ─build_report─▶ report.json ─render─▶ report.html, grid.png ─▶ <manifest>.lock.json

Everything after the journal read is pure or a thin writer; the renderers and
``seedbatch verify`` read only report.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import all_credential_vars
from runner.errors import RunDirError
from runner.files import atomic_write_text
from runner.report.build import build_report
from runner.report.records import RunRecords
from runner.rundir import GRID_PNG, REPORT_HTML, REPORT_JSON

# The renderers (Pillow) and the journal reader (asyncio, SQLite) are imported when a report
# is made, not with this package: `seedbatch plan` imports runner.report.cache and should not
# pay for them (~0.1 s).

__all__ = [
    "GRID_PNG",
    "REPORT_HTML",
    "REPORT_JSON",
    "Finalized",
    "build_report",
    "env_secrets",
    "finalize",
    "render_run",
    "write_report",
]


@dataclass(frozen=True)
class Finalized:
    report: dict[str, Any]
    report_json: Path
    report_html: Path
    grid_png: Path | None = None
    lockfile: Path | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def env_secrets() -> tuple[str, ...]:
    """The credential values set in this process's environment (to mask, never to show)."""
    names = all_credential_vars()
    return tuple(value for name in names if (value := os.environ.get(name)))


def render_report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(run_dir: Path, report: Mapping[str, Any]) -> Path:
    path = run_dir / REPORT_JSON
    atomic_write_text(path, render_report_json(report))
    return path


def render_run(run_dir: str | Path, report: Mapping[str, Any],
               grid_axes: tuple[str | None, str | None] = (None, None),
               html_path: Path | None = None) -> tuple[Path, Path | None]:
    """Write report.html (to ``html_path`` or the run directory) and grid.png when the
    run has a grid. Returns both paths (grid.png's is None without a grid)."""
    from runner.report.grid import build_grid, choose_axes, render_grid_png
    from runner.report.html import render_html, write_html
    from runner.report.thumbs import data_uri, thumbnails

    run_dir = Path(run_dir)
    images = thumbnails(run_dir, report)
    uris = {path: data_uri(image) for path, image in images.items()}
    spec = choose_axes(report, *grid_axes)
    grid = build_grid(report, spec) if spec is not None else None
    grid_png: Path | None = None
    if grid is not None:
        grid_png = render_grid_png(grid, images, run_dir / GRID_PNG,
                                   title=str(report["run"]["name"]))
    target = html_path or run_dir / REPORT_HTML
    html = render_html(report, uris, grid, GRID_PNG if grid_png is not None else None)
    write_html(target, html)
    return target, grid_png


def finalize(run_dir: str | Path, *, secrets: Iterable[str] | None = None,
             records: RunRecords | None = None, lockfile: bool = True) -> Finalized:
    """Write a run directory's report.json, report.html, grid.png and update the lockfile.

    ``records`` default to the run directory's journal; ``secrets`` default to the
    credential variables set in the environment (masked wherever they might appear)."""
    from runner.report.lock import lock_path_for, update_lock
    from runner.report.source import records_from_journal

    run_dir = Path(run_dir)
    records = records if records is not None else records_from_journal(run_dir)
    report = build_report(records, secrets=env_secrets() if secrets is None else secrets)
    report_json = write_report(run_dir, report)
    report_html, grid_png = render_run(run_dir, report)
    warnings: list[str] = []
    lock_path: Path | None = None
    manifest_path = report["manifest"]["path"]
    if lockfile and manifest_path:
        candidate = lock_path_for(manifest_path)
        if candidate.parent.is_dir():
            try:
                update_lock(candidate, report, [job["key"] for job in report["jobs"]])
                lock_path = candidate if candidate.is_file() else None
            except OSError as exc:
                warnings.append(f"lockfile {candidate} not written: {exc.strerror or exc}")
            except RunDirError as exc:
                warnings.append(f"lockfile not updated: {exc}")
        else:
            warnings.append(f"lockfile not written: {candidate.parent} does not exist")
    return Finalized(report, report_json, report_html, grid_png, lock_path, tuple(warnings))
