"""The lockfile: stable bytes, merge rules, atomic writes, clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runner.errors import RunDirError
from runner.report.lock import (
    lock_path_for,
    merge_lock,
    read_lock,
    render_lock,
    update_lock,
)


def plan_keys(report: dict[str, Any]) -> list[str]:
    return [job["key"] for job in report["jobs"]]


def test_lock_sits_beside_the_manifest() -> None:
    assert lock_path_for("/p/manifests/autumn-hero.yaml") == Path(
        "/p/manifests/autumn-hero.lock.json")


def test_same_input_gives_byte_identical_file(tmp_path: Path, report_of) -> None:
    where = tmp_path / "locks"
    where.mkdir()
    a, b = where / "a.lock.json", where / "b.lock.json"
    update_lock(a, report_of, plan_keys(report_of))
    shuffled = copy.deepcopy(report_of)
    shuffled["jobs"].reverse()  # plan order does not matter: keys are sorted
    update_lock(b, shuffled, reversed(plan_keys(report_of)))
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text == render_lock(json.loads(text))  # sorted keys, two-space indent
    before = a.stat().st_mtime_ns
    update_lock(a, report_of, plan_keys(report_of))  # unchanged: not rewritten
    assert a.stat().st_mtime_ns == before
    assert sorted(p.name for p in where.iterdir()) == ["a.lock.json", "b.lock.json"]


def test_entries_hold_outputs_run_and_cost(tmp_path: Path, report_of, kit) -> None:
    path = tmp_path / "autumn-hero.lock.json"
    lock = update_lock(path, report_of, plan_keys(report_of))
    assert lock["version"] == 1
    assert lock["manifest"] == "autumn-hero.yaml"
    succeeded = {j["key"] for j in report_of["jobs"] if j["status"] == "succeeded"}
    assert set(lock["jobs"]) == succeeded
    tent = lock["jobs"][kit.key_of("tent-golden-hour-v4")]
    assert set(tent) == {"name", "model", "outputs", "run_id", "cost_usd", "credits"}
    assert tent["name"] == "tent-golden-hour-v4"
    assert tent["model"] == "wiro/seedream-v4"
    assert tent["run_id"] == report_of["run"]["id"]
    assert tent["cost_usd"] == pytest.approx(0.06)
    assert [set(o) for o in tent["outputs"]] == [{"path", "sha256", "bytes"}] * 2
    # a reused job not in the lock yet names the run its files came from
    reused = lock["jobs"][kit.key_of("tent-overcast-v4")]
    assert reused["run_id"] == kit.PREVIOUS_RUN
    assert read_lock(path) == lock


def test_merge_updates_keeps_and_drops(report_of, kit) -> None:
    keep = kit.key_of("boots-overcast-pix")  # failed now; an earlier entry survives
    gone = "f" * 64  # no longer in the plan
    reused = kit.key_of("tent-overcast-v4")
    ran = kit.key_of("tent-golden-hour-v4")
    old = {"version": 1, "manifest": "autumn-hero.yaml", "jobs": {
        keep: {"name": "boots-overcast-pix", "model": "pixwith/seedream-4.5", "outputs": [],
               "run_id": "old-run", "cost_usd": None, "credits": 6.0},
        gone: {"name": "retired", "model": "wiro/seedream-v3", "outputs": [],
               "run_id": "old-run", "cost_usd": 0.03, "credits": None},
        reused: {"name": "tent-overcast-v4", "model": "wiro/seedream-v4", "outputs": [],
                 "run_id": "first-run", "cost_usd": 0.06, "credits": None},
        ran: {"name": "tent-golden-hour-v4", "model": "wiro/seedream-v4", "outputs": [],
              "run_id": "old-run", "cost_usd": 0.05, "credits": None},
    }}
    merged = merge_lock(old, report_of, plan_keys(report_of))
    assert gone not in merged["jobs"]
    assert merged["jobs"][keep] == old["jobs"][keep]
    assert merged["jobs"][reused] == old["jobs"][reused]  # the run that paid stays named
    assert merged["jobs"][ran]["run_id"] == report_of["run"]["id"]
    assert merged["jobs"][ran]["cost_usd"] == pytest.approx(0.06)
    assert len(merged["jobs"][ran]["outputs"]) == 2
    # a job outside the current plan is never added, even if the run did it
    narrowed = merge_lock(old, report_of, [keep])
    assert set(narrowed["jobs"]) == {keep}
    assert old["jobs"][gone]["name"] == "retired"  # merge is pure: input untouched


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ('{"version": 2, "jobs": {}}', "not a version 1"),
    ("[]", "not a version 1"),
])
def test_damaged_lockfiles_are_reported(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.lock.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RunDirError, match=message):
        read_lock(path)


def test_missing_lockfile_reads_as_none(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "absent.lock.json") is None


def _job(key: str, model: str) -> dict[str, Any]:
    return {"key": key, "name": key, "model": model, "provider": model.split("/")[0],
            "status": "succeeded", "reused": False, "reused_from": None, "cost_usd": 0.03,
            "credits": None, "outputs": [{"path": f"outputs/{key}.png", "sha256": "00",
                                          "bytes": 2}]}


def test_the_lock_names_the_package_behind_each_provider_of_its_jobs() -> None:
    origin = {"distribution": "acme-dist", "version": "1.0", "entry_point": "acme = a:SPEC"}
    report = {"run": {"id": "r1", "providers": {
                  "acme": origin, "beta": {"distribution": "beta-dist", "version": "2.0"}}},
              "manifest": {"path": "m.yaml"},
              "jobs": [_job("k1", "acme/fast"), _job("k2", "beta/slow")]}
    lock = merge_lock(None, report, ["k1", "k2"])
    assert lock["providers"] == {"acme": {"distribution": "acme-dist", "version": "1.0"},
                                 "beta": {"distribution": "beta-dist", "version": "2.0"}}
    # a later run of acme only, with a newer plugin: acme's entry follows it, beta's stays
    later = {**report, "run": {"id": "r2", "providers": {"acme": {**origin, "version": "1.1"}}},
             "jobs": [_job("k1", "acme/fast")]}
    lock = merge_lock(lock, later, ["k1", "k2"])
    assert lock["providers"]["acme"]["version"] == "1.1"
    assert lock["providers"]["beta"]["version"] == "2.0"
    # the plan no longer has beta's job: its provider leaves the lock with it
    lock = merge_lock(lock, later, ["k1"])
    assert list(lock["providers"]) == ["acme"]
