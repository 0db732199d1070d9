"""Cache classification against synthetic run directories and a lockfile."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.report.cache import ONLY_EMULATED, ONLY_REAL, classify, classify_in, scan_runs
from runner.report.lock import merge_lock


@dataclass(frozen=True)
class PlannedJob:
    key: str
    name: str
    provider: str = "wiro"


def k(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_run(runs: Path, run_id: str, finished: str,
              jobs: list[tuple[str, str, str, list[bytes]]], *,
              run_extra: dict[str, Any] | None = None) -> Path:
    """A run directory with files and a report.json: jobs are (key, name, status, files)."""
    run_dir = runs / run_id
    report_jobs = []
    for key, name, status, files in jobs:
        outputs = []
        for i, data in enumerate(files):
            rel = f"outputs/{name}/{i}.png"
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_bytes(data)
            outputs.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data), "index": i})
        report_jobs.append({"key": key, "name": name, "status": status, "outputs": outputs,
                            "provider": "wiro" if name.startswith("w") else "pixwith"})
    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"run": {"id": run_id, "finished_at": finished,
                                      "started_at": finished, **(run_extra or {})},
                              "jobs": report_jobs}
    (run_dir / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return run_dir


def test_scan_finds_reports_newest_first(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "b-late", "2025-03-02T00:00:00.000Z", [])
    write_run(runs, "a-early", "2025-03-01T00:00:00.000Z", [])
    write_run(runs, "c-middle", "2025-03-01T12:00:00.000Z", [])
    (runs / "broken").mkdir()
    (runs / "broken" / "report.json").write_text("{oops")
    (runs / "no-report").mkdir()
    assert [r.run_id for r in scan_runs(runs)] == ["b-late", "c-middle", "a-early"]
    assert scan_runs(tmp_path / "absent") == []


def test_classification(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = write_run(runs, "old", "2025-03-01T00:00:00.000Z", [
        (k("a"), "a", "succeeded", [b"a0", b"a1"]),
        (k("b"), "b", "succeeded", [b"b0"]),
        (k("c"), "c", "failed", []),
        (k("d-v1"), "d", "succeeded", [b"d0"]),
        (k("e"), "e", "succeeded", [b"e0"]),
    ])
    new = write_run(runs, "new", "2025-03-02T00:00:00.000Z", [
        (k("a"), "a", "succeeded", [b"A0", b"A1"]),
        (k("b"), "b", "succeeded", [b"B0"]),
    ])
    (new / "outputs/b/0.png").write_bytes(b"altered")  # the newest copy of b is damaged
    (old / "outputs/e/0.png").unlink()  # e's only copy is gone
    plan = [PlannedJob(k("a"), "a"), PlannedJob(k("b"), "b"), PlannedJob(k("c"), "c"),
            PlannedJob(k("d-v2"), "d"), PlannedJob(k("e"), "e"), PlannedJob(k("f"), "f")]
    decisions = classify_in(plan, runs)
    assert list(decisions) == [job.key for job in plan]
    status = {d.name: d.status for d in decisions.values()}
    assert status == {"a": "cached", "b": "cached", "c": "new", "d": "changed", "e": "new",
                      "f": "new"}

    a = decisions[k("a")]
    assert a.run_id == "new"  # newest first
    assert a.run_dir == new
    assert [o.path for o in a.outputs] == [new / "outputs/a/0.png", new / "outputs/a/1.png"]
    assert [o.rel for o in a.outputs] == ["outputs/a/0.png", "outputs/a/1.png"]
    assert a.outputs[0].sha256 == hashlib.sha256(b"A0").hexdigest()
    assert a.outputs[0].bytes == 2

    b = decisions[k("b")]
    assert b.run_id == "old"  # the newest copy failed its hash check
    assert b.outputs[0].path == old / "outputs/b/0.png"

    assert decisions[k("d-v2")].previous_keys == (k("d-v1"),)
    assert decisions[k("d-v2")].outputs == ()
    assert "missing or altered" in decisions[k("e")].reason
    assert decisions[k("f")].reason == "no earlier outputs"


def test_lockfile_points_at_files_of_a_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = write_run(runs, "keeper", "2025-03-01T00:00:00.000Z", [
        (k("g"), "g", "failed", []),
    ])
    data = b"g-from-an-earlier-resume"
    (run_dir / "outputs/g").mkdir(parents=True)
    (run_dir / "outputs/g/0.png").write_bytes(data)
    lock = {"version": 1, "manifest": "m.yaml", "jobs": {
        k("g"): {"name": "g", "model": "wiro/seedream-v4", "run_id": "keeper",
                 "cost_usd": 0.03, "credits": None,
                 "outputs": [{"path": "outputs/g/0.png", "bytes": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}]},
        k("h-v1"): {"name": "h", "model": "wiro/seedream-v4", "run_id": "deleted-run",
                    "cost_usd": 0.03, "credits": None, "outputs": []},
    }}
    plan = [PlannedJob(k("g"), "g"), PlannedJob(k("h-v2"), "h")]
    decisions = classify(plan, scan_runs(runs), lock)
    assert decisions[k("g")].status == "cached"
    assert decisions[k("g")].run_dir == run_dir
    # the lockfile alone still tells a changed job from a new one
    assert decisions[k("h-v2")].status == "changed"
    assert decisions[k("h-v2")].previous_keys == (k("h-v1"),)


def test_a_finished_report_feeds_the_cache(finished_run) -> None:
    runs_dir = finished_run.run_dir.parent
    plan = [PlannedJob(j.key, j.name) for j in finished_run.records.jobs]
    decisions = classify_in(plan, runs_dir)
    by_name = {d.name: d.status for d in decisions.values()}
    assert by_name["tent-golden-hour-v4"] == "cached"
    assert by_name["boots-overcast-pix"] == "new"  # failed there
    assert sum(s == "cached" for s in by_name.values()) == 9


def test_reuse_lookup_hands_the_executor_verified_files(finished_run) -> None:
    from runner.outputs import ReuseHit
    from runner.report.cache import reuse_lookup

    lookup = reuse_lookup(finished_run.run_dir.parent)
    jobs = {j.name: j for j in finished_run.records.jobs}
    hit = lookup(PlannedJob(jobs["tent-golden-hour-v4"].key, "tent-golden-hour-v4"))
    assert isinstance(hit, ReuseHit)
    assert hit.origin == finished_run.records.meta.run_id
    assert [o.index for o in hit.outputs] == [0, 1]
    first = hit.outputs[0]
    assert first.source == finished_run.run_dir / "outputs/tent-golden-hour-v4/0.png"
    assert first.content_type == "image/png"
    assert (first.width, first.height) == (96, 64)
    assert first.url == "https://cdn.example/tent-golden-hour-v4/0.png"
    assert lookup(PlannedJob(jobs["boots-overcast-pix"].key, "boots-overcast-pix")) is None
    first.source.unlink()
    fresh = reuse_lookup(finished_run.run_dir.parent)
    assert fresh(PlannedJob(jobs["tent-golden-hour-v4"].key, "tent-golden-hour-v4")) is None


def test_reuse_never_crosses_between_emulated_and_real_outputs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "rehearsal", "2025-03-02T00:00:00.000Z",
              [(k("w1"), "w1", "succeeded", [b"placeholder"])], run_extra={"emulated": True})
    write_run(runs, "real", "2025-03-01T00:00:00.000Z",
              [(k("w2"), "w2", "succeeded", [b"paid"])], run_extra={"emulated": False})
    plan = [PlannedJob(k("w1"), "w1"), PlannedJob(k("w2"), "w2")]
    real = classify_in(plan, runs)
    assert (real[k("w1")].status, real[k("w1")].reason) == ("new", ONLY_EMULATED)
    assert real[k("w2")].status == "cached"
    assert real[k("w2")].run_id == "real"
    emulated = classify_in(plan, runs, emulated_providers={"wiro"})
    assert emulated[k("w1")].status == "cached"
    assert emulated[k("w1")].run_id == "rehearsal"
    assert (emulated[k("w2")].status, emulated[k("w2")].reason) == ("new", ONLY_REAL)


def test_a_newer_rehearsal_does_not_hide_older_real_outputs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "real", "2025-03-01T00:00:00.000Z",
              [(k("w1"), "w1", "succeeded", [b"paid"])])
    write_run(runs, "rehearsal", "2025-03-02T00:00:00.000Z",
              [(k("w1"), "w1", "succeeded", [b"placeholder"])], run_extra={"emulated": True})
    decision = classify_in([PlannedJob(k("w1"), "w1")], runs)[k("w1")]
    assert (decision.status, decision.run_id) == ("cached", "real")
    assert decision.outputs[0].sha256 == hashlib.sha256(b"paid").hexdigest()


def test_emulated_providers_of_a_mixed_run_are_told_apart(tmp_path: Path) -> None:
    # A run whose wiro base URL was an emulator but whose pixwith calls were real.
    runs = tmp_path / "runs"
    write_run(runs, "mixed", "2025-03-01T00:00:00.000Z",
              [(k("w1"), "w1", "succeeded", [b"placeholder"]),
               (k("p1"), "p1", "succeeded", [b"paid"])],
              run_extra={"emulated": True, "emulated_providers": ["wiro"]})
    plan = [PlannedJob(k("w1"), "w1"), PlannedJob(k("p1"), "p1", "pixwith")]
    real = classify_in(plan, runs)
    assert real[k("w1")].status == "new"
    assert real[k("p1")].status == "cached"


def test_a_lockfile_entry_that_points_at_a_rehearsal_is_not_trusted(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = write_run(runs, "rehearsal", "2025-03-01T00:00:00.000Z",
                        [(k("w1"), "w1", "failed", [])], run_extra={"emulated": True})
    (run_dir / "outputs").mkdir(exist_ok=True)
    (run_dir / "outputs" / "x.png").write_bytes(b"placeholder")
    lock = {"version": 1, "manifest": "m.yaml", "jobs": {k("w1"): {
        "name": "w1", "model": "wiro/seedream-v4", "run_id": "rehearsal",
        "outputs": [{"path": "outputs/x.png", "bytes": 11,
                     "sha256": hashlib.sha256(b"placeholder").hexdigest()}]}}}
    plan = [PlannedJob(k("w1"), "w1")]
    assert classify(plan, scan_runs(runs), lock)[k("w1")].status == "new"
    assert classify(plan, scan_runs(runs), lock, {"wiro"})[k("w1")].status == "cached"


def test_the_lockfile_never_records_emulated_outputs() -> None:
    job = {"key": k("w1"), "name": "w1", "model": "wiro/seedream-v4", "provider": "wiro",
           "status": "succeeded", "reused": False, "reused_from": None, "cost_usd": 0.0,
           "credits": None, "outputs": [{"path": "outputs/w1.png", "sha256": "00",
                                         "bytes": 2}]}
    report = {"run": {"id": "r1", "emulated": True}, "manifest": {"path": "m.yaml"},
              "jobs": [job]}
    assert merge_lock(None, report, [k("w1")])["jobs"] == {}
    report["run"]["emulated"] = False
    assert list(merge_lock(None, report, [k("w1")])["jobs"]) == [k("w1")]
