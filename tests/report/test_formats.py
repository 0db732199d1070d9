"""Markdown and CSV renderings of report.json."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from runner.report.formats import CSV_COLUMNS, to_csv, to_markdown


def test_markdown_summary_and_tables(report_of: dict[str, Any]) -> None:
    md = to_markdown(report_of)
    assert md.startswith("# autumn-hero — seedbatch report\n")
    assert "- jobs: 12 (9 succeeded, 1 failed, 1 unknown, 1 pending), 1 reused" in md
    assert "- spend: $0.15 (estimate $0.18), credits 24 (estimate 36)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    job_rows = [r for r in rows if "-v4 |" in r or "-pix |" in r]
    assert len(job_rows) >= 12
    failed = next(r for r in rows if r.startswith("| boots-overcast-pix |"))
    assert "failed" in failed
    assert "Invalid image format" in failed
    reused = next(r for r in rows if r.startswith("| tent-overcast-v4 |"))
    assert "reused from 20250101T000000Z-autumn-hero-prev01" in reused


def test_markdown_cells_cannot_break_the_table(report_of: dict[str, Any]) -> None:
    report_of["jobs"][0]["name"] = "a | b\nc"
    md = to_markdown(report_of)
    row = next(line for line in md.splitlines() if line.startswith("| a \\| b c |"))
    assert row.count(" | ") == 7  # eight cells: the pipe inside the name is escaped


def test_csv_one_row_per_output_or_job(report_of: dict[str, Any]) -> None:
    text = to_csv(report_of)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    outputs = sum(len(j["outputs"]) for j in report_of["jobs"])
    without = sum(1 for j in report_of["jobs"] if not j["outputs"])
    assert len(rows) == outputs + without == 11 + 3
    by_path = {r["output_path"]: r for r in rows if r["output_path"]}
    tent = by_path["outputs/tent-golden-hour-v4/1.png"]
    assert tent["job_name"] == "tent-golden-hour-v4"
    assert tent["output_index"] == "1"
    assert tent["width"] == "96"
    assert json.loads(tent["params"]) == {"maxImages": 2, "size": "2048x2048"}
    assert json.loads(tent["axes"]) == {"light": "golden hour", "product": "tent"}
    failed = next(r for r in rows if r["job_name"] == "boots-overcast-pix")
    assert failed["status"] == "failed"
    assert failed["output_path"] == ""
    assert failed["sha256"] == ""
    reused = next(r for r in rows if r["job_name"] == "tent-overcast-v4")
    assert reused["reused"] == "true"
    # the markup-bearing prompt survives quoting intact
    lamp = next(r for r in rows if r["job_name"] == "lamp-overcast-v4")
    assert lamp["prompt"] == report_of["jobs"][-2]["prompt"]
