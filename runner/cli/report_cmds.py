"""``seedbatch report`` and ``seedbatch verify``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from runner.cli import handles_errors, main
from runner.errors import EXIT_FAILED, ConfigError, RunDirError
from runner.files import atomic_write_text
from runner.report import build_report, env_secrets, render_run, write_report
from runner.report.formats import to_csv, to_markdown
from runner.report.grid import parse_grid_option
from runner.report.source import records_from_journal
from runner.report.verify import load_report, verify_run
from runner.rundir import JOURNAL_NAME, REPORT_JSON, check_record_dir


def _load(run_dir: Path, rebuild: bool) -> dict[str, Any]:
    """report.json, built from the journal first when missing (or when asked)."""
    if rebuild or not (run_dir / REPORT_JSON).is_file():
        if not (run_dir / JOURNAL_NAME).is_file():
            raise RunDirError(f"{run_dir}: no {JOURNAL_NAME} to rebuild the report from")
        report = build_report(records_from_journal(run_dir), secrets=env_secrets())
        write_report(run_dir, report)
        return report
    return load_report(run_dir)


@main.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["html", "json", "md", "csv"]),
              default="html", show_default=True,
              help="html writes report.html (and grid.png); the others print.")
@click.option("--grid", "grid", metavar="x=VAR,y=VAR",
              help="Axes of the A/B grid (matrix variables or `model`); default: the two "
                   "with the most values.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Write to FILE instead of the terminal (html: instead of RUN_DIR/report.html).")
@click.option("--rebuild", is_flag=True,
              help="Rebuild report.json from the run's journal first.")
@handles_errors
def report_cmd(run_dir: Path, fmt: str, grid: str | None, output: Path | None,
               rebuild: bool) -> None:
    """Re-render the report of RUN_DIR as html, json, md or csv."""
    run_dir = check_record_dir(run_dir)
    axes = parse_grid_option(grid) if grid else (None, None)
    if grid and fmt != "html":
        raise ConfigError("--grid applies to --format html only")
    report = _load(run_dir, rebuild)
    try:
        if fmt == "html":
            html_path, grid_png = render_run(run_dir, report, axes, output)
            click.echo(f"wrote {html_path}")
            if grid_png is not None:
                click.echo(f"wrote {grid_png}")
            return
        if fmt == "json":
            text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        elif fmt == "md":
            text = to_markdown(report)
        else:
            text = to_csv(report)
        if output is not None:
            atomic_write_text(output, text)
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text, nl=False)
    except OSError as exc:
        where = exc.filename or output or run_dir
        raise ConfigError(f"cannot write {where}: {exc.strerror or exc}") from None


@main.command("verify")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@handles_errors
def verify_cmd(run_dir: Path) -> None:
    """Re-hash every output of RUN_DIR (and manifest.yaml) against report.json.

    Exit 0 when every file is intact, 1 when any is missing or changed."""
    run_dir = check_record_dir(run_dir)
    result = verify_run(run_dir)
    if result.intact:
        click.echo(f"intact: {result.checked} files")
        return
    for problem in result.problems:
        click.echo(problem.describe())
    n = len(result.problems)
    click.echo(f"{n} of {result.checked} files missing or changed", err=True)
    raise SystemExit(EXIT_FAILED)
