"""`seedbatch run / resume / status / cancel` through click's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from execute_support import env_for, simple_manifest, write

from runner.cli import main
from runner.emulator import EmulatorConfig, serve_in_thread

NO_CREDS = {"WIRO_API_KEY": "", "WIRO_API_SECRET": "", "PIXWITH_API_KEY": "",
            "WIRO_BASE_URL": "", "PIXWITH_BASE_URL": ""}


@pytest.fixture
def emulator() -> Iterator[object]:
    with serve_in_thread(EmulatorConfig(latency=0.2)) as server:
        yield server


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_without_a_terminal_run_refuses_to_spend_unless_yes(
        tmp_path: Path, runner: CliRunner, emulator: object) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    runs = tmp_path / "runs"
    res = runner.invoke(main, ["run", str(manifest), "--runs-dir", str(runs)],
                        env=env_for(emulator))
    assert res.exit_code == 2
    assert "--yes" in res.stderr
    assert "Estimated: 2 images" in res.stderr  # the plan and its cost were shown first
    assert not runs.exists()  # nothing created, nothing sent
    assert emulator.stats()["requests_total"] == 0  # type: ignore[attr-defined]
    res = runner.invoke(main, ["run", str(manifest), "--runs-dir", str(runs), "--yes"],
                        env=env_for(emulator))
    assert res.exit_code == 0, res.output
    assert "succeeded 2, failed 0, pending 0, unknown 0 (of 2)" in res.stdout
    assert "run dir: " in res.stdout


def test_emulate_needs_no_confirmation_and_no_credentials(tmp_path: Path,
                                                          runner: CliRunner) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(3))
    res = runner.invoke(main, ["run", str(manifest), "--emulate", "--emulate-latency", "0.1",
                               "--runs-dir", str(tmp_path / "runs")], env=NO_CREDS)
    assert res.exit_code == 0, res.output
    assert "Emulated" in res.stderr
    assert "succeeded 3" in res.stdout
    assert "images: 3" in res.stdout
    assert "spent: $0.0900 (estimated $0.0900)" in res.stdout


def test_quiet_prints_only_the_summary(tmp_path: Path, runner: CliRunner) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    res = runner.invoke(main, ["run", str(manifest), "--emulate", "--emulate-latency", "0.1",
                               "--quiet", "--runs-dir", str(tmp_path / "runs")], env=NO_CREDS)
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    assert res.stdout.startswith("succeeded 2")


def test_missing_credentials_exit_2_naming_the_variable(tmp_path: Path,
                                                         runner: CliRunner) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    res = runner.invoke(main, ["run", str(manifest), "--yes", "--runs-dir",
                               str(tmp_path / "runs")], env=NO_CREDS)
    assert res.exit_code == 2
    assert "WIRO_API_KEY is not set" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_manifest_exit_2_located(tmp_path: Path, runner: CliRunner) -> None:
    manifest = write(tmp_path, "bad.yaml", "version: 1\nname: x\njobs: 3\n")
    res = runner.invoke(main, ["run", str(manifest), "--emulate", "--runs-dir",
                               str(tmp_path / "runs")], env=NO_CREDS)
    assert res.exit_code == 2
    assert "bad.yaml:" in res.stderr
    assert "Traceback" not in res.output


def test_only_selects_jobs_by_name_glob_and_status_shows_them(
        tmp_path: Path, runner: CliRunner) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(12))
    runs = tmp_path / "runs"
    res = runner.invoke(main, ["run", str(manifest), "--emulate", "--emulate-latency", "0.1",
                               "--only", "img-1*", "--runs-dir", str(runs)], env=NO_CREDS)
    assert res.exit_code == 0, res.output
    assert "12 jobs, 3 selected by --only img-1*" in res.stderr  # img-1, img-10, img-11
    assert "succeeded 3" in res.stdout
    assert "9 skipped" in res.stdout
    (run_dir,) = runs.iterdir()
    st = runner.invoke(main, ["status", str(run_dir)])
    assert st.exit_code == 0
    assert "jobs: succeeded 3, skipped 9" in st.stdout
    assert "not running" in st.stdout
    assert "not selected by --only img-1*" in st.stdout
    doc = json.loads(runner.invoke(main, ["status", str(run_dir), "--json"]).stdout)
    assert doc["counts"]["succeeded"] == 3
    assert doc["running_pid"] is None
    assert {j["name"] for j in doc["jobs"] if j["state"] == "succeeded"} == \
        {"img-1", "img-10", "img-11"}
    assert all(j["polls"] >= 1 for j in doc["jobs"] if j["state"] == "succeeded")
    none = runner.invoke(main, ["run", str(manifest), "--emulate", "--only", "nope*",
                                "--runs-dir", str(runs)], env=NO_CREDS)
    assert none.exit_code == 2
    assert "matches no job" in none.stderr


def test_resume_and_status_refuse_what_is_not_a_run_dir(tmp_path: Path,
                                                        runner: CliRunner) -> None:
    for command in ("resume", "status", "cancel"):
        res = runner.invoke(main, [command, str(tmp_path)], env=NO_CREDS)
        assert res.exit_code == 2, command
        assert "not a run directory" in res.stderr


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path, runner: CliRunner,
                                                   emulator: object) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(2))
    runs = tmp_path / "runs"
    env = env_for(emulator)
    assert runner.invoke(main, ["run", str(manifest), "--yes", "-q", "--runs-dir", str(runs)],
                         env=env).exit_code == 0
    (run_dir,) = runs.iterdir()
    res = runner.invoke(main, ["resume", str(run_dir), "-q"], env=env)
    assert res.exit_code == 0, res.output
    assert "succeeded 2" in res.stdout
    assert emulator.stats()["tasks_created_total"] == 2  # type: ignore[attr-defined]


def test_cancel_of_a_run_with_nothing_in_flight(tmp_path: Path, runner: CliRunner) -> None:
    manifest = write(tmp_path, "m.yaml", simple_manifest(1))
    runs = tmp_path / "runs"
    runner.invoke(main, ["run", str(manifest), "--emulate", "-q", "--emulate-latency", "0",
                         "--runs-dir", str(runs)], env=NO_CREDS)
    (run_dir,) = runs.iterdir()
    res = runner.invoke(main, ["cancel", str(run_dir)], env=NO_CREDS)
    assert res.exit_code == 0
    assert "cancelled 0 remote tasks" in res.stdout


def test_two_jobs_asking_the_same_are_refused_before_anything(tmp_path: Path,
                                                               runner: CliRunner) -> None:
    text = """\
version: 1
name: twins
models:
  m: {model: wiro/seedream-v4, params: {size: 1024x1024}}
jobs:
  - {name: a, model: m, prompt: same}
  - {name: b, model: m, prompt: same}
"""
    manifest = write(tmp_path, "twins.yaml", text)
    expected = "twins.yaml:7:12: job 'b' asks exactly what job 'a' asks"
    for command in (["validate", str(manifest)], ["plan", str(manifest)]):
        said = runner.invoke(main, command, env=NO_CREDS)
        assert said.exit_code == 2
        assert expected in said.stderr
        assert "(at $.jobs[1].name)" in said.stderr
    res = runner.invoke(main, ["run", str(manifest), "--emulate", "--runs-dir",
                               str(tmp_path / "runs")], env=NO_CREDS)
    assert res.exit_code == 2
    assert expected in res.stderr
    assert not (tmp_path / "runs").exists()
