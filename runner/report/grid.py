"""The A/B grid: jobs laid out by two axes, like a contact sheet.

Axes are the matrix variables (``report["axes"]``) plus the model alias, an implicit axis
named ``model``. Unless told otherwise the grid uses the two axes with the most distinct
values among the jobs, ties broken by manifest order (matrix variables first, in the order
the manifest wrote them, then ``model``); the axis with more values runs across (x).
Only axes with at least two values qualify; with just one such axis the grid is one row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from runner.errors import ConfigError

MODEL_AXIS = "model"
MISSING = object()  # a job without a value on an axis


@dataclass(frozen=True, slots=True)
class GridSpec:
    x: str
    y: str | None = None


@dataclass(frozen=True, slots=True)
class Label:
    key: str  # canonical form used for grouping
    text: str  # what is shown


@dataclass(frozen=True)
class Grid:
    spec: GridSpec
    columns: tuple[Label, ...]
    rows: tuple[Label, ...]  # one empty label when there is no y axis
    cells: Mapping[tuple[int, int], tuple[Mapping[str, Any], ...]]  # (row, col) → jobs
    inner_axes: tuple[str, ...] = ()  # other axes that vary: they tell a cell's images apart

    def jobs_at(self, row: int, col: int) -> tuple[Mapping[str, Any], ...]:
        return self.cells.get((row, col), ())

    def caption(self, job: Mapping[str, Any], output: Mapping[str, Any] | None = None) -> str:
        """What tells this image from its cell neighbours: the other varying axes' values
        (e.g. the model alias) and the image index; the job name when nothing varies."""
        parts = [_label(axis_value(job, axis)).text for axis in self.inner_axes]
        if output is not None and len(job.get("outputs", ())) > 1:
            parts.append(f"#{output['index']}")
        return " · ".join(parts) if parts else str(job["name"])

    @property
    def max_images(self) -> int:
        """The most images (or failed-job placeholders) any one cell holds."""
        most = 1
        for jobs in self.cells.values():
            most = max(most, sum(max(1, len(j["outputs"])) for j in jobs))
        return most


def axis_names(report: Mapping[str, Any]) -> list[str]:
    """Every axis in tie-break order: matrix variables in manifest order, then ``model``."""
    names = list(report.get("axes", []))
    for job in report.get("jobs", []):
        for name in job.get("axes", {}):
            if name not in names:
                names.append(name)
    if MODEL_AXIS not in names:
        names.append(MODEL_AXIS)
    return names


def axis_value(job: Mapping[str, Any], axis: str) -> Any:
    axes = job.get("axes", {})
    if axis in axes:
        return axes[axis]
    if axis == MODEL_AXIS:
        return job["alias"]
    return MISSING


def _label(value: Any) -> Label:
    if value is MISSING:
        return Label("\x00missing", "-")
    if isinstance(value, str):
        return Label(json.dumps(value), value)
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return Label(text, text)


def axis_values(report: Mapping[str, Any], axis: str) -> list[Label]:
    """Distinct values of ``axis`` among the jobs, in order of first appearance."""
    seen: dict[str, Label] = {}
    for job in report.get("jobs", []):
        value = axis_value(job, axis)
        if value is MISSING:
            continue
        label = _label(value)
        seen.setdefault(label.key, label)
    return list(seen.values())


def parse_grid_option(text: str) -> tuple[str | None, str | None]:
    """``x=VAR,y=VAR`` (either part may be left out) → (x, y)."""
    x: str | None = None
    y: str | None = None
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or name not in ("x", "y") or not value or (x if name == "x" else y):
            raise ConfigError(f"--grid {text!r}: expected x=VAR,y=VAR (e.g. x=light,y=model)")
        if name == "x":
            x = value
        else:
            y = value
    if x is None and y is None:
        raise ConfigError(f"--grid {text!r}: expected x=VAR,y=VAR (e.g. x=light,y=model)")
    return x, y


def choose_axes(report: Mapping[str, Any], x: str | None = None,
                y: str | None = None) -> GridSpec | None:
    """The grid's axes: the ones asked for, the rest chosen by the module's rule.

    Returns None when no axis has two values (nothing to compare). Raises ConfigError for
    an asked-for axis the run does not have."""
    names = axis_names(report)
    for asked in (x, y):
        if asked is not None and asked not in names:
            raise ConfigError(f"--grid: no axis named {asked!r} in this run; "
                              f"axes: {', '.join(names)}")
    if x is not None and x == y:
        raise ConfigError(f"--grid: x and y are both {x!r}; pick two different axes")
    counts = {name: len(axis_values(report, name)) for name in names}
    ranked = sorted((n for n in names if counts[n] >= 2),
                    key=lambda n: (-counts[n], names.index(n)))
    if x is None and y is None:
        if not ranked:
            return None
        return GridSpec(ranked[0], ranked[1] if len(ranked) > 1 else None)
    if x is None:
        rest = [n for n in ranked if n != y]
        if not rest:
            return GridSpec(str(y), None)
        return GridSpec(rest[0], y)
    if y is None:
        rest = [n for n in ranked if n != x]
        return GridSpec(x, rest[0] if rest else None)
    return GridSpec(x, y)


def build_grid(report: Mapping[str, Any], spec: GridSpec) -> Grid:
    """Place every job in its (row, column) cell; jobs without a value go under "—"."""
    jobs = list(report.get("jobs", []))

    def labels(axis: str | None) -> list[Label]:
        if axis is None:
            return [Label("", "")]
        found = axis_values(report, axis)
        if any(axis_value(j, axis) is MISSING for j in jobs):
            found.append(_label(MISSING))
        return found

    columns, rows = labels(spec.x), labels(spec.y)
    col_index = {label.key: i for i, label in enumerate(columns)}
    row_index = {label.key: i for i, label in enumerate(rows)}
    cells: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for job in jobs:
        c = col_index[_label(axis_value(job, spec.x)).key]
        r = 0 if spec.y is None else row_index[_label(axis_value(job, spec.y)).key]
        cells.setdefault((r, c), []).append(job)
    inner = tuple(name for name in axis_names(report)
                  if name not in (spec.x, spec.y) and len(axis_values(report, name)) >= 2)
    return Grid(spec, tuple(columns), tuple(rows), {k: tuple(v) for k, v in cells.items()},
                inner)


# ---- grid.png ------------------------------------------------------------------------------

INK = (34, 38, 46)
MUTED = (110, 116, 128)
FAIL = (190, 40, 40)
RULE = (222, 226, 232)
PAPER = (255, 255, 255)
HEADER = (244, 246, 249)
TILE = (236, 239, 243)


FONT_FILES = {False: ("DejaVuSans.ttf", "LiberationSans-Regular.ttf"),
              True: ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf")}


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A system sans-serif with wide glyph coverage when there is one, else Pillow's own."""
    for name in FONT_FILES[bold]:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_grid_png(grid: Grid, thumbs: Mapping[str, Image.Image], dest: Path,
                    title: str = "") -> Path:
    """Draw ``grid`` as a labelled contact sheet and save it as PNG at ``dest``."""
    font, bold = _font(13), _font(15, bold=True)
    line = 20
    pad, gap = 10, 6
    most = grid.max_images
    tile = 200 if most <= 2 else 150 if most <= 4 else 110
    while tile > 48 and len(grid.columns) * (most * (tile + gap) + 2 * pad) > 7000:
        tile = int(tile * 0.8)
    cell_w = most * tile + (most - 1) * gap + 2 * pad
    cell_h = tile + 2 * pad + line
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 0 if grid.spec.y is None else int(min(280, 2 * pad + 4 + max(
        [scratch.textlength(r.text, font=bold) for r in grid.rows]
        + [scratch.textlength(grid.spec.y, font=font)])))
    top = line + pad  # title
    head_h = 2 * line + pad
    width = label_w + len(grid.columns) * cell_w + pad
    height = top + head_h + len(grid.rows) * cell_h + pad
    sheet = Image.new("RGB", (max(width, 320), height), PAPER)
    draw = ImageDraw.Draw(sheet)
    heading = title or "A/B grid"
    axes_text = f"columns: {grid.spec.x}" + (f", rows: {grid.spec.y}" if grid.spec.y else "")
    draw.text((pad, pad // 2), _fit(draw, f"{heading}  |  {axes_text}", bold,
                                    sheet.width - 2 * pad), font=bold, fill=INK)
    y0 = top
    draw.rectangle((0, y0, sheet.width, y0 + head_h), fill=HEADER)
    draw.text((label_w + pad, y0 + 2), grid.spec.x, font=font, fill=MUTED)
    if grid.spec.y:
        draw.text((pad, y0 + line + 2), _fit(draw, grid.spec.y, font, label_w - 2 * pad),
                  font=font, fill=MUTED)
    for c, column in enumerate(grid.columns):
        x = label_w + c * cell_w
        draw.text((x + pad, y0 + line + 2), _fit(draw, column.text, bold, cell_w - 2 * pad),
                  font=bold, fill=INK)
    y0 += head_h
    for r, row in enumerate(grid.rows):
        ry = y0 + r * cell_h
        draw.line((0, ry, sheet.width, ry), fill=RULE)
        if grid.spec.y is not None:
            draw.text((pad, ry + pad + tile // 2 - 8), _fit(draw, row.text, bold,
                      label_w - 2 * pad), font=bold, fill=INK)
        for c in range(len(grid.columns)):
            cx = label_w + c * cell_w + pad
            slot = 0
            for job in grid.jobs_at(r, c):
                outputs = job["outputs"] or [None]
                for output in outputs:
                    sx = cx + slot * (tile + gap)
                    sy = ry + pad
                    draw.rectangle((sx, sy, sx + tile - 1, sy + tile - 1), fill=TILE)
                    image = thumbs.get(output["path"]) if output else None
                    if image is not None:
                        fitted = image.copy()
                        fitted.thumbnail((tile, tile), Image.Resampling.LANCZOS)
                        sheet.paste(fitted, (sx + (tile - fitted.width) // 2,
                                             sy + (tile - fitted.height) // 2))
                    else:
                        word = job["status"] if output is None else "missing"
                        draw.text((sx + 8, sy + tile // 2 - 8), _fit(draw, word, font, tile - 16),
                                  font=font, fill=FAIL if output is None else MUTED)
                    draw.text((sx, sy + tile + 3), _fit(draw, grid.caption(job, output), font,
                                                        tile), font=font, fill=MUTED)
                    slot += 1
            if not grid.jobs_at(r, c):
                draw.text((cx, ry + pad + tile // 2 - 8), "no job", font=font, fill=MUTED)
    for c in range(1, len(grid.columns)):
        x = label_w + c * cell_w
        draw.line((x, top, x, height - pad), fill=RULE)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    sheet.save(tmp, format="PNG", optimize=True)
    tmp.replace(dest)
    return dest


def grid_rows(grid: Grid) -> Sequence[tuple[Label, list[tuple[Mapping[str, Any], ...]]]]:
    """Rows with their cells' jobs, for templates."""
    return [(row, [grid.jobs_at(r, c) for c in range(len(grid.columns))])
            for r, row in enumerate(grid.rows)]
