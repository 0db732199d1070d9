"""The promise of the store, through the real command line: a lockfile in git plus the
store rebuild a batch anywhere for $0 — against a local folder and a real S3-compatible
server alike. The "real" host is an emulator that does not say it is one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from store_support import (
    JOBS,
    StoreSetup,
    cli,
    host_env,
    only_run_dir,
    outputs_by_job,
    report_of,
    tasks_created,
    write_manifest,
)

pytestmark = pytest.mark.e2e


def test_a_teammate_rebuilds_a_locked_batch_from_the_store_for_nothing(
        tmp_path: Path, real_host: Any, store_setup: StoreSetup) -> None:
    env = host_env(real_host, store_setup.env)
    machine_a = tmp_path / "a"
    manifest_a = write_manifest(machine_a)
    made = cli("run", str(manifest_a), "--yes", "--store", store_setup.url,
               "--runs-dir", str(machine_a / "runs"), env=env)
    assert made.returncode == 0, made.stderr
    assert f"store: {store_setup.url} ({JOBS} jobs stored)" in made.stdout
    assert tasks_created(real_host) == JOBS
    run_a = only_run_dir(machine_a / "runs")
    assert report_of(run_a)["run"]["store"] == {
        "url": store_setup.url, "jobs_stored": JOBS, "jobs_not_stored": 0, "not_stored": [],
        "error": None}

    # machine B: a fresh clone holds the manifest and its lockfile, nothing else
    machine_b = tmp_path / "b"
    manifest_b = write_manifest(machine_b)
    lock_a = machine_a / "shared.lock.json"
    shutil.copy(lock_a, machine_b / "shared.lock.json")

    planned = cli("plan", str(manifest_b), "--store", store_setup.url, "--json",
                  "--runs-dir", str(machine_b / "runs"), env=env)
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert [(j["status"], j["from_store"]) for j in doc["jobs"]] == [("cached", True)] * JOBS
    assert doc["estimate"]["to_run"]["jobs"] == 0
    shown = cli("plan", str(manifest_b), "--store", store_setup.url,
                "--runs-dir", str(machine_b / "runs"), env=env)
    assert shown.stdout.count("from store") >= JOBS

    rebuilt = cli("run", str(manifest_b), "--yes", "--store", store_setup.url,
                  "--runs-dir", str(machine_b / "runs"), env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert tasks_created(real_host) == JOBS  # not one new task
    assert f"{JOBS} reused from earlier runs ({JOBS} from store)" in rebuilt.stdout
    assert rebuilt.stderr.count("from store (run ") == JOBS  # the progress lines
    run_b = only_run_dir(machine_b / "runs")
    assert outputs_by_job(run_b) == outputs_by_job(run_a)  # byte-identical
    report_b = report_of(run_b)
    assert report_b["totals"]["from_store"] == JOBS
    assert report_b["totals"]["cost_usd"] == 0
    assert report_b["totals"]["credits"] == 0
    assert {j["reused_from"] for j in report_b["jobs"]} == {run_a.name}
    assert all(j["from_store"] for j in report_b["jobs"])
    verified = cli("verify", str(run_b), env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the lockfile in git does not change: it still names the run that paid
    assert (machine_b / "shared.lock.json").read_text() == lock_a.read_text()
    md = cli("report", str(run_b), "--format", "md", env=env)
    assert "(from store, run " in md.stdout

    # pull: the same outputs without running anything, into a run directory…
    machine_c = tmp_path / "c"
    manifest_c = write_manifest(machine_c)
    pulled = cli("pull", str(manifest_c), "--store", store_setup.url,
                 "--runs-dir", str(machine_c / "runs"), env=host_env(None, store_setup.env))
    assert pulled.returncode == 0, pulled.stderr
    run_c = only_run_dir(machine_c / "runs")
    assert outputs_by_job(run_c) == outputs_by_job(run_a)
    assert cli("verify", str(run_c), env=env).returncode == 0
    # …or as plain files named by output.filename
    to = machine_c / "assets"
    files = cli("pull", str(manifest_c), "--store", store_setup.url, "--to", str(to),
                env=host_env(None, store_setup.env))
    assert files.returncode == 0, files.stderr
    for name, blobs in outputs_by_job(run_a).items():
        assert (to / name / "0.png").read_bytes() == blobs[0]
    assert tasks_created(real_host) == JOBS


def test_pull_lists_every_job_the_store_lacks_and_exits_1(
        tmp_path: Path, real_host: Any) -> None:
    store = tmp_path / "store"
    env = host_env(real_host)
    first = write_manifest(tmp_path / "a")
    made = cli("run", str(first), "--yes", "--only", "img-0-*", "--store", str(store),
               "--runs-dir", str(tmp_path / "a" / "runs"), env=env)
    assert made.returncode == 0, made.stderr
    other = write_manifest(tmp_path / "b")
    pulled = cli("pull", str(other), "--store", str(store), "--runs-dir",
                 str(tmp_path / "b" / "runs"), env=host_env(None))
    assert pulled.returncode == 1
    lacking = sorted(line.removeprefix("not in the store: ")
                     for line in pulled.stderr.splitlines()
                     if line.startswith("not in the store: "))
    assert lacking == ["img-1-pix", "img-1-v4", "img-2-pix", "img-2-v4"]
    run = only_run_dir(tmp_path / "b" / "runs")
    statuses = {j["name"]: j["status"] for j in report_of(run)["jobs"]}
    assert statuses == {"img-0-v4": "succeeded", "img-0-pix": "succeeded",
                        **dict.fromkeys(lacking, "skipped")}
    assert tasks_created(real_host) == 2


def test_an_emulated_run_never_writes_to_the_store_and_is_never_served_from_it(
        tmp_path: Path, real_host: Any) -> None:
    store = tmp_path / "store"
    manifest = write_manifest(tmp_path / "m", f"store: {store}\n")
    rehearsal = cli("run", str(manifest), "--emulate", "--emulate-latency", "0.05", "--yes",
                    "--runs-dir", str(tmp_path / "rehearsal"), env=host_env(None))
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert "neither looked up in nor uploaded to it" in rehearsal.stderr
    assert not list(store.rglob("*")) or not [p for p in store.rglob("*") if p.is_file()]

    # a real run fills the store; a rehearsal still does not take anything from it
    real = cli("run", str(manifest), "--yes", "--runs-dir", str(tmp_path / "real"),
               env=host_env(real_host))
    assert real.returncode == 0, real.stderr
    records = sorted(p for p in (store / "jobs").rglob("*.json"))
    assert len(records) == JOBS
    again = cli("run", str(manifest), "--emulate", "--emulate-latency", "0.05", "--yes",
                "--runs-dir", str(tmp_path / "rehearsal2"), env=host_env(None))
    assert again.returncode == 0, again.stderr
    assert "from store" not in again.stdout + again.stderr
    assert sorted(p for p in (store / "jobs").rglob("*.json")) == records
    for record in records:
        assert json.loads(record.read_text())["emulated"] is False
