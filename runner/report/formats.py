"""report.json → Markdown (a readable summary and table) and CSV (one row per output)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from runner.display import credits as _credits
from runner.display import duration as _duration
from runner.display import size as _size
from runner.display import usd as _usd


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    value = "" if text is None else str(text)
    return " ".join(value.split()).replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(report: Mapping[str, Any]) -> str:
    run, totals = report["run"], report["totals"]
    by_status = ", ".join(f"{n} {status}" for status, n in totals["by_status"].items() if n)
    lines = [
        f"# {_cell(run['name'])} — seedbatch report",
        "",
        f"- run: `{run['id']}`" + (" (emulated)" if run.get("emulated") else ""),
        f"- manifest: `{report['manifest']['path']}` (sha256 `{report['manifest']['sha256']}`)",
        f"- started {run['started_at'] or '—'}, finished {run['finished_at'] or '—'}"
        f" ({_duration(run['duration_seconds'])})",
        f"- jobs: {totals['jobs']} ({by_status or 'none'})"
        + (f", {totals['reused']} reused" if totals["reused"] else "")
        + (f" ({totals['from_store']} from store)" if totals.get("from_store") else ""),
        f"- images: {totals['images']} ({_size(totals['bytes'])})",
        f"- spend: {_usd(totals['cost_usd'])} (estimate {_usd(totals['estimate']['usd'])}),"
        f" credits {_credits(totals['credits'])} (estimate"
        f" {_credits(totals['estimate']['credits'])})",
        *_store_line(run.get("store")),
        f"- {report['tool']['name']} {report['tool']['version']},"
        f" Python {report['environment']['python']}",
        "",
        "## Cost by model",
        "",
        "| alias | model | jobs | succeeded | images | USD | est. USD | credits | est. credits |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in totals["by_model"]:
        lines.append(
            f"| {_cell(row['alias'])} | {_cell(row['model'])} | {row['jobs']} |"
            f" {row['succeeded']} | {row['images']} | {_usd(row['cost_usd'])} |"
            f" {_usd(row['estimate_usd'])} | {_credits(row['credits'])} |"
            f" {_credits(row['estimate_credits'])} |"
        )
    lines += [
        "",
        "## Jobs",
        "",
        "| job | model | status | images | USD | credits | task | error |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    for job in report["jobs"]:
        status = job["status"] + (
            f" (from store, run {job['reused_from']})" if job.get("from_store") else
            f" (reused from {job['reused_from']})" if job["reused"] else "")
        if job.get("ran_on_after_cancel"):
            status += " (ran on after a cancel)"
        lines.append(
            f"| {_cell(job['name'])} | {_cell(job['alias'])} | {_cell(status)} |"
            f" {len(job['outputs'])} | {_usd(job['cost_usd'])} | {_credits(job['credits'])} |"
            f" {_cell(job['task_id'] or '')} | {_cell(job['error'] or '')} |"
        )
    outputs = [(job, o) for job in report["jobs"] for o in job["outputs"]]
    if outputs:
        lines += ["", "## Outputs", "", "| job | file | size | sha256 |", "|---|---|--:|---|"]
        for job, output in outputs:
            lines.append(f"| {_cell(job['name'])} | `{_cell(output['path'])}` |"
                         f" {_size(output['bytes'])} | `{output['sha256'][:16]}` |")
    return "\n".join(lines) + "\n"


def _store_line(store: Mapping[str, Any] | None) -> list[str]:
    if not store:
        return []
    line = f"- store: `{store['url']}` — {store['jobs_stored']} jobs stored"
    if store["jobs_not_stored"]:
        line += (f", **{store['jobs_not_stored']} not stored** ({store['error'] or 'failed'};"
                 f" `seedbatch push` stores them)")
    return [line]


CSV_COLUMNS = (
    "job_key", "job_name", "status", "provider", "model", "alias", "index", "axes", "prompt",
    "params", "task_id", "attempts", "polls", "submitted_at", "finished_at", "cost_usd",
    "credits", "reused", "reused_from", "error", "output_path", "output_index", "sha256",
    "bytes", "content_type", "width", "height", "url",
)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def to_csv(report: Mapping[str, Any]) -> str:
    """One row per output; a job without outputs gets one row with empty output columns."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for job in report["jobs"]:
        base = {
            "job_key": job["key"], "job_name": job["name"], "status": job["status"],
            "provider": job["provider"], "model": job["model"], "alias": job["alias"],
            "index": job["index"], "axes": job["axes"], "prompt": job["prompt"],
            "params": job["params"], "task_id": job["task_id"], "attempts": job["attempts"],
            "polls": job["polls"], "submitted_at": job["times"]["submitted_at"],
            "finished_at": job["times"]["finished_at"], "cost_usd": job["cost_usd"],
            "credits": job["credits"], "reused": job["reused"],
            "reused_from": job["reused_from"], "error": job["error"],
        }
        for output in job["outputs"] or [None]:
            row = dict(base)
            if output is not None:
                row.update({
                    "output_path": output["path"], "output_index": output["index"],
                    "sha256": output["sha256"], "bytes": output["bytes"],
                    "content_type": output["content_type"], "width": output["width"],
                    "height": output["height"], "url": output["url"],
                })
            writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()
