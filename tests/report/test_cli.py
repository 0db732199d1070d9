"""`seedbatch report` and `seedbatch verify` through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from runner.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_report_json_prints_report_json(finished_run) -> None:
    result = invoke("report", str(finished_run.run_dir), "--format", "json")
    assert result.exit_code == 0
    on_disk = json.loads((finished_run.run_dir / "report.json").read_text())
    assert json.loads(result.output) == on_disk


def test_report_md_and_csv(finished_run, tmp_path: Path) -> None:
    md = invoke("report", str(finished_run.run_dir), "--format", "md")
    assert md.exit_code == 0
    assert "## Cost by model" in md.output
    out = tmp_path / "rows.csv"
    result = invoke("report", str(finished_run.run_dir), "--format", "csv", "--output", str(out))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 14


def test_report_html_rewrites_the_page_with_a_grid_override(finished_run) -> None:
    html = finished_run.run_dir / "report.html"
    html.unlink()
    (finished_run.run_dir / "grid.png").unlink()
    result = invoke("report", str(finished_run.run_dir), "--grid", "x=model,y=product")
    assert result.exit_code == 0, result.output
    assert f"wrote {html}" in result.output
    assert "grid.png" in result.output
    page = html.read_text(encoding="utf-8")
    assert "columns: model · rows: product" in page
    assert (finished_run.run_dir / "grid.png").is_file()


def test_report_refuses_unknown_grid_axes(finished_run) -> None:
    result = invoke("report", str(finished_run.run_dir), "--grid", "x=colour")
    assert result.exit_code == 2
    assert "no axis named 'colour'" in result.output
    result = invoke("report", str(finished_run.run_dir), "--grid", "light")
    assert result.exit_code == 2
    result = invoke("report", str(finished_run.run_dir), "--format", "md", "--grid", "x=light")
    assert result.exit_code == 2
    assert "--format html only" in result.output


def test_bad_run_directory_exits_2(tmp_path: Path) -> None:
    for command in ("report", "verify"):
        result = invoke(command, str(tmp_path))
        assert result.exit_code == 2
        assert "not a run directory" in result.output
        result = invoke(command, str(tmp_path / "absent"))
        assert result.exit_code == 2
        assert "no such run directory" in result.output
    assert "Traceback" not in result.output


def test_verify_exit_codes(finished_run) -> None:
    ok = invoke("verify", str(finished_run.run_dir))
    assert ok.exit_code == 0
    assert ok.output.strip() == "intact: 12 files"
    victim = finished_run.run_dir / "outputs/tent-golden-hour-pix/0.png"
    victim.unlink()
    changed = finished_run.run_dir / "outputs/boots-golden-hour-v4/0.png"
    changed.write_bytes(b"not the same")
    bad = invoke("verify", str(finished_run.run_dir))
    assert bad.exit_code == 1
    assert "missing  outputs/tent-golden-hour-pix/0.png" in bad.output
    assert "changed  outputs/boots-golden-hour-v4/0.png" in bad.output
    assert "2 of 12 files missing or changed" in bad.output


def test_report_builds_report_json_from_the_journal_when_missing(journal_run) -> None:
    assert not (journal_run / "report.json").exists()
    result = invoke("report", str(journal_run), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["run"]["id"] == journal_run.name
    assert (journal_run / "report.json").is_file()
    verified = invoke("verify", str(journal_run))
    assert verified.exit_code == 0
    assert verified.output.strip() == "intact: 3 files"


def test_rebuild_needs_a_journal(finished_run) -> None:
    result = invoke("report", str(finished_run.run_dir), "--rebuild")
    assert result.exit_code == 2
    assert "no journal.sqlite to rebuild the report from" in result.output


def test_unwritable_output_is_a_clear_error(finished_run, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "out.md"
    result = invoke("report", str(finished_run.run_dir), "--format", "md", "-o", str(target))
    assert result.exit_code == 2
    assert "cannot write" in result.output
    assert "Traceback" not in result.output


def test_verify_points_at_report_when_only_the_journal_exists(journal_run) -> None:
    result = invoke("verify", str(journal_run))
    assert result.exit_code == 2
    assert "no report.json here" in result.output
    assert "seedbatch report" in result.output
