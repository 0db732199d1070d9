"""``seedbatch pick``, ``picks`` and ``export`` through the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from review_support import Project

from runner.cli import main
from runner.manifest import load_plan
from runner.review.picks import Change, apply_change, read_picks, render_picks


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_picks(project: Project) -> None:
    """Each test starts from no picks file."""
    project.picks.unlink(missing_ok=True)


def keys(project: Project) -> dict[str, str]:
    return {job.name: job.key for job in load_plan(project.manifest).jobs}


def test_pick_writes_the_current_plans_key_and_the_name(project: Project) -> None:
    done = cli("pick", project.manifest, "tent-dawn-pix", "boots-dusk-v4/1", "--stars", "4",
               "--note", "crisp")
    assert done.exit_code == 0, done.output
    assert "picked tent-dawn-pix/0" in done.output
    assert "picked boots-dusk-v4/1" in done.output
    picks = read_picks(project.picks)
    k = keys(project)
    assert picks == {"version": 1, "manifest": "hero.yaml", "jobs": {
        k["tent-dawn-pix"]: {"name": "tent-dawn-pix",
                             "images": {"0": {"verdict": "pick", "stars": 4, "note": "crisp"}}},
        k["boots-dusk-v4"]: {"name": "boots-dusk-v4",
                             "images": {"1": {"verdict": "pick", "stars": 4, "note": "crisp"}}},
    }}
    text = project.picks.read_text(encoding="utf-8")
    assert text == render_picks(picks)  # sorted keys, two-space indent, final newline
    assert text.index(min(k["tent-dawn-pix"], k["boots-dusk-v4"])) < text.index(
        max(k["tent-dawn-pix"], k["boots-dusk-v4"]))
    again = cli("pick", project.manifest, "tent-dawn-pix", "--stars", "4", "--note", "crisp")
    assert again.exit_code == 0
    assert project.picks.read_text(encoding="utf-8") == text  # the same verdict: no diff


def test_reject_clear_and_patterns(project: Project) -> None:
    k = keys(project)
    assert cli("pick", project.manifest, "boots-*-v4").exit_code == 0
    assert cli("pick", project.manifest, "boots-dawn-v4", "--reject").exit_code == 0
    picks = read_picks(project.picks)
    assert picks["jobs"][k["boots-dawn-v4"]]["images"] == {"0": {"verdict": "reject"}}
    assert picks["jobs"][k["boots-dusk-v4"]]["images"] == {"0": {"verdict": "pick"}}
    assert cli("pick", project.manifest, "boots-dawn-v4", "--clear").exit_code == 0
    picks = read_picks(project.picks)
    assert k["boots-dawn-v4"] not in picks["jobs"]  # nothing left: the entry goes


@pytest.mark.parametrize(("args", "says"), [
    (["no-such-job"], "no job named 'no-such-job' in the plan of hero.yaml"),
    (["tent-dawn-pix", "nothing-*"], "no job named 'nothing-*'"),
    (["tent-dawn-pix", "--stars", "7"], "7 is not in the range 0<=x<=5"),
])
def test_a_bad_pick_exits_2_and_writes_nothing(project: Project, args: list[str],
                                               says: str) -> None:
    done = CliRunner().invoke(main, ["pick", str(project.manifest), *args])
    assert done.exit_code == 2
    assert says in done.output
    assert not project.picks.exists()


def test_a_damaged_picks_file_is_named_not_overwritten(project: Project) -> None:
    project.picks.write_text('{"version": 1, "jobs": {<<<<<<< HEAD\n', encoding="utf-8")
    done = CliRunner().invoke(main, ["pick", str(project.manifest), "tent-dawn-pix"])
    assert done.exit_code == 2
    assert f"{project.picks}:1:" in done.output
    assert "not valid JSON" in done.output
    assert project.picks.read_text(encoding="utf-8").startswith('{"version": 1, "jobs": {<<<')


def test_picks_lists_verdicts_and_shows_a_changed_jobs_as_previous(project: Project) -> None:
    old_key = project.job(project.run1, "tent-dusk-v4")["key"]  # before v4's size changed
    picks = apply_change(read_picks(project.picks, "hero.yaml"), old_key, "tent-dusk-v4", 0,
                         Change(verdict="pick", stars=5))
    picks = apply_change(picks, "f" * 64, "gone-job", 0, Change(verdict="reject"))
    project.picks.write_text(render_picks(picks), encoding="utf-8")
    assert cli("pick", project.manifest, "tent-dawn-pix", "--note", "the one").exit_code == 0
    listed = cli("picks", project.manifest)
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert any(line.startswith("tent-dawn-pix/0") and 'pick "the one"' in line
               for line in lines)
    assert any(line.startswith("tent-dusk-v4/0") and "pick ★★★★★" in line and "previous" in line
               for line in lines)
    assert "1 picked, 0 rejected, 1 verdicts for jobs no longer in the plan" in listed.output
    as_json = json.loads(cli("picks", project.manifest, "--json").stdout)
    rows = {(r["job"], r["index"]): r for r in as_json["picks"]}
    assert rows[("tent-dusk-v4", 0)]["previous"] is True
    assert rows[("tent-dusk-v4", 0)]["key"] == keys(project)["tent-dusk-v4"]
    assert rows[("tent-dawn-pix", 0)] == {"job": "tent-dawn-pix", "index": 0,
                                          "key": keys(project)["tent-dawn-pix"],
                                          "verdict": "pick", "stars": None,
                                          "note": "the one", "previous": False}
    assert as_json["not_in_plan"] == 1


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_provenance(entry: dict[str, Any], report: dict[str, Any], name: str) -> None:
    """Every field of one provenance entry against the run's report.json."""
    job = next(j for j in report["jobs"] if j["name"] == name)
    output = job["outputs"][entry["index"]]
    assert entry["job"] == job["name"]
    assert entry["key"] == job["key"]
    assert entry["model"] == job["model"]
    assert entry["host"] == job["provider"]
    assert entry["prompt"] == job["prompt"]
    assert entry["params"] == job["params"]
    assert entry["inputs"] == [{"ref": i["ref"], "url": i["url"], "sha256": i["sha256"]}
                               for i in job["inputs"]]
    assert entry["run_id"] == report["run"]["id"]
    assert entry["task_id"] == job["task_id"]
    assert entry["sha256"] == output["sha256"]
    assert entry["bytes"] == output["bytes"]
    assert entry["cost_usd"] == job["cost_usd"]
    assert entry["credits"] == job["credits"]
    assert entry["emulated"] == job["emulated"]


def test_export_copies_the_picks_with_provenance_checked_against_the_report(
        project: Project, tmp_path: Path) -> None:
    assert cli("pick", project.manifest, "tent-dawn-pix", "--stars", "5",
               "--note", "hero").exit_code == 0
    assert cli("pick", project.manifest, "boots-dusk-v4").exit_code == 0
    assert cli("pick", project.manifest, "boots-dawn-v4", "--reject").exit_code == 0
    out = tmp_path / "deliver"
    done = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs_real)
    assert done.exit_code == 0, done.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "boots-dusk-v4/0.png", "provenance.json", "tent-dawn-pix/0.png"]
    report = project.report(project.run3)
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["manifest"] == "hero.yaml"
    assert provenance["manifest_sha256"] == sha(project.manifest)
    for rel, name in (("tent-dawn-pix/0.png", "tent-dawn-pix"),
                      ("boots-dusk-v4/0.png", "boots-dusk-v4")):
        entry = provenance["files"][rel]
        check_provenance(entry, report, name)
        assert entry["emulated"] is False
        assert sha(out / rel) == entry["sha256"]
    assert provenance["files"]["tent-dawn-pix/0.png"]["note"] == "hero"
    assert provenance["files"]["tent-dawn-pix/0.png"]["stars"] == 5
    assert provenance["files"]["tent-dawn-pix/0.png"]["verdict"] == "pick"
    text = (out / "provenance.json").read_text(encoding="utf-8")
    assert text == json.dumps(provenance, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    again = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs_real)
    assert again.exit_code == 0
    assert "2 already in" in again.output
    assert (out / "provenance.json").read_text(encoding="utf-8") == text


def test_export_refuses_to_overwrite_a_different_file_without_force(
        project: Project, tmp_path: Path) -> None:
    assert cli("pick", project.manifest, "tent-dawn-pix").exit_code == 0
    out = tmp_path / "deliver"
    (out / "tent-dawn-pix").mkdir(parents=True)
    (out / "tent-dawn-pix" / "0.png").write_bytes(b"someone else's file")
    refused = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs_real)
    assert refused.exit_code == 1
    assert "tent-dawn-pix/0: " in refused.output
    assert "exists with other content; --force replaces it" in refused.output
    assert (out / "tent-dawn-pix" / "0.png").read_bytes() == b"someone else's file"
    forced = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs_real,
                 "--force")
    assert forced.exit_code == 0, forced.output
    expected = project.job(project.run3, "tent-dawn-pix")["outputs"][0]["sha256"]
    assert sha(out / "tent-dawn-pix" / "0.png") == expected


def test_export_exits_1_and_lists_what_it_could_not_export(project: Project,
                                                          tmp_path: Path) -> None:
    assert cli("pick", project.manifest, "broken", "tent-dusk-pix/3",
               "tent-dawn-pix").exit_code == 0
    old_key = project.job(project.run1, "tent-dusk-v4")["key"]
    picks = apply_change(read_picks(project.picks), old_key, "tent-dusk-v4", 0,
                         Change(verdict="pick"))
    project.picks.write_text(render_picks(picks), encoding="utf-8")
    out = tmp_path / "deliver"
    done = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs_real)
    assert done.exit_code == 1
    assert "not exported (3):" in done.output
    assert "broken/0: no run holds a succeeded output of it" in done.output
    assert f"tent-dusk-pix/3: run {project.run3.name} has no image 3 of it" in done.output
    assert "tent-dusk-v4: picked before its spec changed (a new key); pick it again" in done.output
    assert (out / "tent-dawn-pix" / "0.png").is_file()  # the rest is exported


def test_emulated_outputs_need_the_flag_and_are_labelled(project: Project,
                                                         tmp_path: Path) -> None:
    assert cli("pick", project.manifest, "tent-dawn-v4").exit_code == 0
    out = tmp_path / "rehearsal"
    refused = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs)
    assert refused.exit_code == 1
    assert ("tent-dawn-v4/0: only emulated outputs (a rehearsal); pass --include-emulated"
            in refused.output)
    assert not (out / "tent-dawn-v4").exists()
    done = cli("export", project.manifest, "--to", out, "--runs-dir", project.runs,
               "--include-emulated")
    assert done.exit_code == 0, done.output
    assert "emulated (a rehearsal, not real results): tent-dawn-v4/0.png" in done.output
    entry = json.loads((out / "provenance.json").read_text(encoding="utf-8"))["files"][
        "tent-dawn-v4/0.png"]
    assert entry["emulated"] is True
    check_provenance(entry, project.report(project.run2), "tent-dawn-v4")


def test_export_all_takes_every_jobs_latest_outputs(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "all"
    done = cli("export", project.manifest, "--to", out, "--all", "--runs-dir",
               project.runs_real)
    assert done.exit_code == 1  # "broken" never succeeded
    assert "broken: no run holds a succeeded output of it" in done.output
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert sorted(provenance["files"]) == sorted(
        f"{n}/0.png" for n in keys(project) if n != "broken")
    for rel, entry in provenance["files"].items():
        assert sha(out / rel) == entry["sha256"]
        assert entry["verdict"] is None


def test_export_with_nothing_picked_says_so(project: Project, tmp_path: Path) -> None:
    done = cli("export", project.manifest, "--to", tmp_path / "x", "--runs-dir",
               project.runs_real)
    assert done.exit_code == 0
    assert "nothing to export: no image is picked yet" in done.output
    assert not (tmp_path / "x").exists()
