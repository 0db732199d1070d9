"""Run directory (journal + plan.json + manifest copy) → run records → a valid report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runner.execute.journal import Journal
from runner.manifest import load_plan
from runner.report import finalize
from runner.report.build import build_report
from runner.report.records import JobStatus
from runner.report.source import manifest_facts, records_from_journal
from runner.report.verify import verify_run
from runner.resources import load_schema
from runner.rundir import create_run_files, output_names, read_plan


def test_manifest_facts_keep_manifest_order(kit) -> None:
    axes, description = manifest_facts(kit.JOURNAL_MANIFEST.decode())
    assert axes == ("light", "lens", "angle")
    assert description == "Light A/B"
    assert manifest_facts(":\n  - [") == ((), None)


def test_records_from_a_journal(journal_run: Path) -> None:
    records = records_from_journal(journal_run)
    meta = records.meta
    assert meta.run_id == journal_run.name
    assert meta.name == "lights"
    assert meta.description == "Light A/B"
    assert meta.axes == ("light", "lens", "angle")
    assert meta.emulated is False
    assert meta.finished_at == "2025-03-01T00:01:00.000Z"
    by_name = {j.name: j for j in records.jobs}
    assert [j.name for j in records.jobs] == ["dawn", "dusk", "noon", "night", "late", "again",
                                              "later"]
    dawn = by_name["dawn"]
    assert dawn.status == JobStatus.SUCCEEDED
    assert (dawn.task_id, dawn.attempts, dawn.polls) == ("task-1", 1, 1)
    assert dawn.cost_usd == pytest.approx(0.0351)
    assert dawn.prompt == "a tent at dawn"
    assert dict(dawn.params) == {"size": "2048x2048", "maxImages": 1}
    assert dict(dawn.axes) == {"light": "dawn"}
    assert dawn.inputs[0].sha256 == "ab" * 32
    assert dawn.inputs[0].path == "/abs/refs/a.png"
    assert dawn.started_at is not None
    assert dawn.outputs[0].path == "outputs/dawn/0.png"
    assert (dawn.outputs[0].width, dawn.outputs[0].height) == (40, 30)
    assert by_name["dusk"].status == JobStatus.FAILED
    assert by_name["dusk"].error == "wiro: task failed (pexit 1)"
    assert by_name["noon"].status == JobStatus.UNKNOWN
    assert by_name["night"].status == JobStatus.PENDING
    assert "resume" in (by_name["night"].error or "")
    assert by_name["late"].status == JobStatus.UNKNOWN  # left mid-submit
    again = by_name["again"]
    assert again.status == JobStatus.SUCCEEDED
    assert again.reused
    assert again.reused_from == "20250201T000000Z-lights-old999"
    assert by_name["later"].status == JobStatus.SKIPPED
    assert by_name["later"].error == "not selected by --only"


def test_finalize_writes_a_valid_report_page_and_lockfile(journal_run: Path,
                                                          tmp_path: Path) -> None:
    done = finalize(journal_run, secrets=())
    report = json.loads(done.report_json.read_text(encoding="utf-8"))
    validator = Draft202012Validator(load_schema("report.schema.json"))
    assert [e.message for e in validator.iter_errors(report)] == []
    assert report["totals"]["by_status"] == {"succeeded": 2, "failed": 1, "unknown": 2,
                                             "cancelled": 0, "pending": 1, "skipped": 1}
    assert report["totals"]["cost_usd"] == pytest.approx(0.0351)
    assert done.report_html.is_file()
    assert done.grid_png is not None
    assert done.lockfile == tmp_path / "lights.lock.json"
    lock = json.loads(done.lockfile.read_text())
    assert sorted(e["name"] for e in lock["jobs"].values()) == ["again", "dawn"]
    assert verify_run(journal_run).intact
    assert build_report(records_from_journal(journal_run), secrets=(),
                        environment=report["environment"]) == report


def test_an_emulated_run_pins_nothing_in_the_lockfile(journal_run: Path,
                                                     tmp_path: Path) -> None:
    with Journal.open(journal_run / "journal.sqlite") as journal:
        journal.set_meta("emulated", True)
    done = finalize(journal_run, secrets=())
    assert done.report["run"]["emulated"] is True
    assert done.lockfile is None
    assert not (tmp_path / "lights.lock.json").exists()


def test_finalize_masks_credentials_from_the_environment(journal_run: Path,
                                                         monkeypatch) -> None:
    secret = "wiro-secret-value-0042"
    monkeypatch.setenv("WIRO_API_SECRET", secret)
    with Journal.open(journal_run / "journal.sqlite") as journal:
        key = next(j.key for j in journal.jobs() if j.name == "dusk")
        journal.mark_failed(key, f"signature mismatch for {secret}")
    done = finalize(journal_run)
    for name in ("report.json", "report.html"):
        assert secret not in (journal_run / name).read_text(encoding="utf-8")
    assert done.report["jobs"][1]["error"] == "signature mismatch for [redacted]"


def _rewrite_plan(run_dir: Path, **fields: object) -> None:
    path = run_dir / "plan.json"
    plan = json.loads(path.read_text(encoding="utf-8"))
    plan.update(fields)
    path.write_text(json.dumps(plan), encoding="utf-8")


def test_a_new_plan_json_carries_the_axis_order_and_description(kit, tmp_path: Path) -> None:
    manifest = tmp_path / "lights.yaml"
    manifest.write_bytes(kit.JOURNAL_MANIFEST)
    plan = load_plan(manifest)
    assert (plan.axes, plan.description) == (("light", "lens", "angle"), "Light A/B")
    names = {job.key: output_names(plan, job) for job in plan.jobs}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    create_run_files(run_dir, plan, names)
    doc = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    assert doc["axes"] == ["light", "lens", "angle"]
    assert doc["description"] == "Light A/B"
    # the same facts the report read from the manifest copy before plan.json had them
    assert (tuple(doc["axes"]), doc["description"]) == manifest_facts(
        (run_dir / "manifest.yaml").read_text(encoding="utf-8"))
    again = read_plan(run_dir)
    assert (again.axes, again.description) == (("light", "lens", "angle"), "Light A/B")


def test_records_take_axes_and_description_from_plan_json(journal_run: Path) -> None:
    _rewrite_plan(journal_run, axes=["lens", "light"], description="From the plan")
    (journal_run / "manifest.yaml").write_text("description: [not read\n", encoding="utf-8")
    meta = records_from_journal(journal_run).meta
    assert meta.axes == ("lens", "light")
    assert meta.description == "From the plan"


def test_a_plan_json_without_a_description_is_not_filled_from_the_manifest(
        journal_run: Path) -> None:
    _rewrite_plan(journal_run, axes=[], description=None)
    meta = records_from_journal(journal_run).meta
    assert meta.axes == ()
    assert meta.description is None


def test_an_older_plan_json_falls_back_to_the_manifest_copy(journal_run: Path) -> None:
    plan = json.loads((journal_run / "plan.json").read_text(encoding="utf-8"))
    assert "axes" not in plan
    assert "description" not in plan
    assert read_plan(journal_run, partial=True).axes is None
    meta = records_from_journal(journal_run).meta
    assert meta.axes == ("light", "lens", "angle")
    assert meta.description == "Light A/B"


def test_plan_axes_follow_the_order_the_matrix_expands_in(tmp_path: Path) -> None:
    manifest = tmp_path / "merged.yaml"
    manifest.write_text("version: 1\n"
                        "x-axes: &axes {b: [1, 2], a: [3]}\n"
                        "matrix: {<<: *axes, c: [5]}\n"
                        "jobs:\n"
                        "  - name: 'j-{{ a }}-{{ b }}-{{ c }}'\n"
                        "    model: wiro/seedream-v4\n"
                        "    prompt: '{{ a }} {{ b }} {{ c }}'\n", encoding="utf-8")
    plan = load_plan(manifest)
    assert plan.axes == tuple(plan.jobs[0].axes)
