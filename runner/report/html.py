"""report.html: one self-contained page (inline CSS, thumbnails as data: URIs).

Every value reaches the page through Jinja2 with autoescaping on, and a
Content-Security-Policy allows no script at all: a prompt holding ``<script>`` is text.
Full-size images are linked by their path relative to the run directory, so the page
works when moved alone (thumbnails) and inside the run directory (full images too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined

from runner.display import credits, duration, size, usd, value
from runner.files import atomic_write_text
from runner.report.grid import Grid, grid_rows

_ENV = Environment(
    loader=PackageLoader("runner.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _href(path: str) -> str:
    return quote(path, safe="/")


_ENV.filters.update(usd=usd, credits=credits, size=size, duration=duration, value=value,
                    href=_href)


def _grid_px(grid: Grid | None, page_px: int = 880) -> int:
    """Thumbnail size in the grid: as large as fits the page width, within 84..150 px."""
    if grid is None:
        return 150
    slots = 0
    for c in range(len(grid.columns)):
        slots += max(sum(max(1, len(job["outputs"])) for job in grid.jobs_at(r, c))
                     for r in range(len(grid.rows)))
    return max(84, min(150, page_px // max(1, slots) - 8))


def render_html(report: Mapping[str, Any], thumbs: Mapping[str, str] | None = None,
                grid: Grid | None = None, grid_png: str | None = None) -> str:
    """The page for ``report``. ``thumbs`` maps output paths to data: URIs (outputs
    without one are shown by relative path); ``grid`` adds the A/B grid section."""
    jobs = list(report["jobs"])
    outputs = [(job, output) for job in jobs for output in job["outputs"]]
    problems = [job for job in jobs if job["status"] != "succeeded"]
    totals = report["totals"]
    spent_usd = totals["cost_usd"]
    estimate_usd = totals["estimate"]["usd"]
    template = _ENV.get_template("report.html.j2")
    return template.render(
        report=report,
        run=report["run"],
        totals=totals,
        jobs=jobs,
        outputs=outputs,
        problems=problems,
        thumbs=dict(thumbs or {}),
        grid=grid,
        grid_rows=grid_rows(grid) if grid is not None else [],
        grid_png=grid_png,
        grid_px=_grid_px(grid),
        usd_ratio=(spent_usd / estimate_usd) if estimate_usd else None,
    )


def write_html(path: Path, html: str) -> Path:
    atomic_write_text(path, html)
    return path
