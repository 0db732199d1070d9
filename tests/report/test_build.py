"""report.json: shape (validated against the schema), totals, per-job record, redaction."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner import __version__
from runner.report.build import build_report, current_environment, iso_utc
from runner.report.records import JobStatus, RunRecords
from runner.resources import load_schema


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = load_schema("report.schema.json")
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, doc: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_full_run_report_is_valid_against_the_schema(report_of, validator) -> None:
    assert errors(validator, report_of) == []
    statuses = {job["status"] for job in report_of["jobs"]}
    assert statuses == {"succeeded", "failed", "unknown", "pending"}
    assert any(job["reused"] for job in report_of["jobs"])
    # the document survives a JSON round trip unchanged (no tuples, no NaN, no objects)
    assert json.loads(json.dumps(report_of, allow_nan=False)) == report_of


def test_schema_rejects_unknown_fields_and_bad_values(report_of, validator) -> None:
    extra = json.loads(json.dumps(report_of))
    extra["jobs"][0]["surprise"] = 1
    assert any("surprise" in e for e in errors(validator, extra))
    bad_hash = json.loads(json.dumps(report_of))
    bad_hash["jobs"][0]["outputs"][0]["sha256"] = "XYZ"
    assert errors(validator, bad_hash)
    absolute = json.loads(json.dumps(report_of))
    absolute["jobs"][0]["outputs"][0]["path"] = "/etc/passwd"
    assert errors(validator, absolute)
    local_time = json.loads(json.dumps(report_of))
    local_time["run"]["started_at"] = "2025-03-01T10:15:00+02:00"
    assert errors(validator, local_time)


def test_header_names_tool_environment_manifest_and_run(report_of, synthetic) -> None:
    assert report_of["tool"] == {"name": "seedbatch", "version": __version__}
    assert report_of["manifest"]["path"] == str(synthetic.manifest)
    assert report_of["manifest"]["copy"] == "manifest.yaml"
    assert report_of["run"]["id"] == synthetic.records.meta.run_id
    assert report_of["run"]["started_at"] == "2025-03-01T10:15:00.000Z"
    assert report_of["run"]["finished_at"] == "2025-03-01T10:16:30.500Z"
    assert report_of["run"]["duration_seconds"] == 90.5
    assert report_of["axes"] == ["product", "light"]


def test_current_environment_lists_every_library(validator) -> None:
    env = current_environment()
    assert set(env["libraries"]) == {"httpx", "jinja2", "jsonschema", "pyyaml", "pillow",
                                     "click", "rich", "aiolimiter", "stamina"}
    assert env["libraries"]["jinja2"]  # installed here, so a version string
    assert env["python"].count(".") == 2


def test_totals_are_the_sums_of_the_jobs(report_of) -> None:
    jobs, totals = report_of["jobs"], report_of["totals"]
    assert totals["jobs"] == len(jobs) == 12
    assert totals["cost_usd"] == pytest.approx(sum(j["cost_usd"] or 0 for j in jobs))
    assert totals["credits"] == pytest.approx(sum(j["credits"] or 0 for j in jobs))
    assert totals["images"] == sum(len(j["outputs"]) for j in jobs)
    assert totals["bytes"] == sum(o["bytes"] for j in jobs for o in j["outputs"])
    assert sum(totals["by_status"].values()) == totals["jobs"]
    assert totals["by_status"] == {"succeeded": 9, "failed": 1, "unknown": 1, "cancelled": 0,
                                   "pending": 1, "skipped": 0}
    assert totals["succeeded"] == 9
    assert totals["failed"] == 1
    assert totals["reused"] == 1
    # the estimate covers the jobs this run sent, not the reused one
    sent = [j for j in jobs if not j["reused"]]
    assert totals["estimate"]["usd"] == pytest.approx(sum(j["estimate"]["usd"] for j in sent))
    assert totals["estimate"]["credits"] == pytest.approx(
        sum(j["estimate"]["credits"] for j in sent))
    by_model = {row["alias"]: row for row in totals["by_model"]}
    assert set(by_model) == {"v4", "pix"}
    assert sum(r["cost_usd"] for r in by_model.values()) == pytest.approx(totals["cost_usd"])
    assert sum(r["credits"] for r in by_model.values()) == pytest.approx(totals["credits"])
    assert by_model["pix"]["credits"] == 6.0 * 4  # six pix jobs: one failed, one pending
    assert sum(r["jobs"] for r in by_model.values()) == 12
    # latency and USD per image from this run's own succeeded jobs only
    for alias, row in by_model.items():
        ran = [j for j in jobs if j["alias"] == alias and not j["reused"]
               and j["status"] == "succeeded"]
        durations = sorted(j["times"]["duration_seconds"] for j in ran)
        assert row["latency"]["jobs"] == len(durations)
        assert row["latency"]["max_s"] == pytest.approx(durations[-1])
        assert min(durations) <= row["latency"]["median_s"] <= row["latency"]["p90_s"]
        usd = sum(j["cost_usd"] or 0 for j in ran)
        images = sum(len(j["outputs"]) for j in ran)
        assert row["usd_per_image"] == (pytest.approx(usd / images) if usd else None)


def test_latency_summary_is_nearest_rank() -> None:
    from runner.report.build import _latency

    assert _latency([]) is None
    assert _latency([None]) is None
    assert _latency([3.0, 1.0, 2.0]) == {"jobs": 3, "median_s": 2.0, "p90_s": 3.0,
                                         "max_s": 3.0}
    ten = _latency([float(i) for i in range(1, 11)])
    assert ten == {"jobs": 10, "median_s": 5.5, "p90_s": 9.0, "max_s": 10.0}


def test_job_record_carries_request_outcome_and_outputs(report_of, kit) -> None:
    jobs = {j["name"]: j for j in report_of["jobs"]}
    tent = jobs["tent-golden-hour-v4"]
    assert tent["key"] == kit.key_of("tent-golden-hour-v4")
    assert (tent["provider"], tent["model"], tent["alias"]) == ("wiro", "wiro/seedream-v4", "v4")
    assert tent["prompt"] == "Acme tent at golden hour"
    assert tent["params"] == {"size": "2048x2048", "maxImages": 2}
    assert tent["axes"] == {"product": "tent", "light": "golden hour"}
    assert tent["status"] == "succeeded"
    assert tent["error"] is None
    assert tent["task_id"]
    assert tent["attempts"] == 1
    assert tent["polls"] == 3
    assert tent["times"] == {"submitted_at": "2025-03-01T10:15:01.000Z",
                             "started_at": "2025-03-01T10:15:02.500Z",
                             "finished_at": "2025-03-01T10:15:09.250Z",
                             "duration_seconds": 8.25}
    assert tent["cost_usd"] == pytest.approx(0.06)
    assert tent["credits"] is None
    assert [o["path"] for o in tent["outputs"]] == ["outputs/tent-golden-hour-v4/0.png",
                                                    "outputs/tent-golden-hour-v4/1.png"]
    first = tent["outputs"][0]
    assert first["url"] == "https://cdn.example/tent-golden-hour-v4/0.png"
    assert (first["width"], first["height"], first["content_type"]) == (96, 64, "image/png")
    assert len(first["sha256"]) == 64
    assert first["bytes"] > 0

    failed = jobs["boots-overcast-pix"]
    assert failed["status"] == "failed"
    assert "Invalid image format" in failed["error"]
    assert failed["outputs"] == []
    assert failed["credits"] is None
    assert jobs["lamp-golden-hour-v4"]["status"] == "unknown"


def test_reused_job_costs_nothing_in_this_run_and_names_its_origin(synthetic, kit) -> None:
    records = synthetic.records
    jobs = tuple(replace(j, cost_usd=0.06) if j.reused else j for j in records.jobs)
    report = build_report(RunRecords(records.meta, jobs), environment=kit.ENVIRONMENT)
    reused = next(j for j in report["jobs"] if j["reused"])
    assert reused["reused_from"] == kit.PREVIOUS_RUN
    assert reused["cost_usd"] == 0.0
    assert reused["credits"] == 0.0
    assert reused["status"] == "succeeded"
    assert reused["outputs"]


def test_a_host_that_reports_no_cost_is_charged_its_estimate_marked(synthetic, kit,
                                                                     validator) -> None:
    records = synthetic.records
    ran = next(j for j in records.jobs if j.status == "succeeded" and not j.reused
               and len(j.outputs) >= 1)
    silent = replace(ran, cost_usd=None, credits=None, estimate_images=4, estimate_usd=0.16,
                     estimate_credits=0.0)
    jobs = tuple(silent if j.key == ran.key else j for j in records.jobs)
    report = build_report(RunRecords(records.meta, jobs), environment=kit.ENVIRONMENT)
    assert errors(validator, report) == []
    job = next(j for j in report["jobs"] if j["key"] == ran.key)
    # four images were asked for at $0.04; what came back is charged at the same rate
    assert job["cost_estimated"] is True
    assert job["cost_usd"] == pytest.approx(0.04 * len(ran.outputs))
    assert job["credits"] is None
    assert report["totals"]["estimated_usd"] == pytest.approx(0.04 * len(ran.outputs))
    others = [j for j in report["jobs"] if j["key"] != ran.key]
    assert not any(j["cost_estimated"] for j in others)
    # a failed job that reported nothing is not charged
    failed = next(j for j in report["jobs"] if j["status"] == "failed")
    assert failed["cost_estimated"] is False


def test_build_is_deterministic(synthetic, kit) -> None:
    a = build_report(synthetic.records, environment=kit.ENVIRONMENT)
    b = build_report(synthetic.records, environment=kit.ENVIRONMENT)
    assert json.dumps(a) == json.dumps(b)


def test_secrets_are_masked_anywhere_in_the_report(synthetic, kit) -> None:
    secret = "sk-live-0123456789abcdef"
    records = synthetic.records
    first, *rest = records.jobs
    leaky = replace(first, error=f"HTTP 401 for key {secret}",
                    params={**first.params, f"note-{secret}": secret},
                    prompt=f"a {secret}b", status=JobStatus.FAILED, outputs=())
    meta = replace(records.meta, description=f"desc {secret}")
    report = build_report(RunRecords(meta, (leaky, *rest)), secrets=[secret, "", "ab"],
                          environment=kit.ENVIRONMENT)
    text = json.dumps(report)
    assert secret not in text
    job = report["jobs"][0]
    assert job["error"] == "HTTP 401 for key [redacted]"
    assert job["params"] == {"size": "2048x2048", "maxImages": 2,
                             "note-[redacted]": "[redacted]"}
    assert report["run"]["description"] == "desc [redacted]"
    # too-short "secrets" are ignored rather than shredding every hash and word
    assert "ab" in text
    # without secrets= nothing is masked
    plain = build_report(RunRecords(meta, (leaky, *rest)), environment=kit.ENVIRONMENT)
    assert secret in json.dumps(plain)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    (0, "1970-01-01T00:00:00.000Z"),
    (1740824102.5, "2025-03-01T10:15:02.500Z"),
    ("2025-03-01T10:15:00Z", "2025-03-01T10:15:00.000Z"),
    ("2025-03-01T12:15:00+02:00", "2025-03-01T10:15:00.000Z"),
    ("2025-03-01T10:15:00.123456", "2025-03-01T10:15:00.123Z"),
])
def test_times_are_normalised_to_utc(value, expected) -> None:
    assert iso_utc(value) == expected
