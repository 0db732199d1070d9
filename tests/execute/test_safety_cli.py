"""Production safety through the real command line (``python -m runner``, a process of its
own) against emulators on real loopback sockets.

A "real" endpoint here is an emulator started with ``identify=False``: its index answers
404 like a vendor's API, so seedbatch cannot tell it from the real host — exactly what a real
run sees. Conditions are forced, never waited for by luck: tasks are held unfinished by
freezing the emulator's clock (``POST /__clock``) and finished by restarting it a minute on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import cli, journal_states, only_run_dir, report_of, set_clock, start_cli, wait_for

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread
from runner.execute.journal import JobState, Journal
from runner.report.cache import ONLY_EMULATED
from runner.version import __version__

pytestmark = pytest.mark.e2e

MANIFEST = """\
version: 1
name: safety
matrix:
  i: [0, 1, 2]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "img-{{ i }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "picture number {{ i }}"
"""

PIXWITH_ONLY = """\
version: 1
name: pix-only
matrix:
  i: [0, 1]
models:
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "pix-{{ i }}"
    model: pix
    prompt: "picture number {{ i }}"
limits:
  pixwith: {concurrency: 2}
"""

def env_at(server: Any | None) -> dict[str, str]:
    """This environment with the emulator's credentials, pointed at ``server`` (or at no
    base URL at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIRO_", "PIXWITH_"))}
    env.update(demo_credentials())
    if server is not None:
        env["WIRO_BASE_URL"] = server.wiro_base_url
        env["PIXWITH_BASE_URL"] = server.pixwith_base_url
    return env


@pytest.fixture
def real_host() -> Iterator[Any]:
    """An emulator that does not say it is one: to seedbatch, a real endpoint."""
    with serve_in_thread(EmulatorConfig(latency=0.2, identify=False)) as server:
        yield server


def test_a_rehearsal_never_passes_for_a_real_run(tmp_path: Path, real_host: Any) -> None:
    manifest = tmp_path / "safety.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = str(tmp_path / "runs")
    lock = tmp_path / "safety.lock.json"

    rehearsal = cli("run", str(manifest), "--emulate", "--emulate-latency", "0.1", "--yes",
                    "--runs-dir", runs, env=env_at(None))
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert not lock.exists()  # a rehearsal is not a manifest's result

    # plan, as a real run would go: every job is new, and it says why
    planned = cli("plan", str(manifest), "--runs-dir", runs, "--json", env=env_at(real_host))
    assert planned.returncode == 0, planned.stderr
    jobs = json.loads(planned.stdout)["jobs"]
    assert [(j["status"], j["status_reason"]) for j in jobs] == [("new", ONLY_EMULATED)] * 6
    text = cli("plan", str(manifest), "--runs-dir", runs, env=env_at(real_host))
    assert "6 new jobs — only emulated outputs so far (a rehearsal)" in text.stdout
    # …and as another rehearsal would go: every job is cached
    again = cli("plan", str(manifest), "--runs-dir", runs, "--emulate", "--json",
                env=env_at(None))
    assert {j["status"] for j in json.loads(again.stdout)["jobs"]} == {"cached"}

    real = cli("run", str(manifest), "--yes", "--runs-dir", runs, env=env_at(real_host))
    assert real.returncode == 0, real.stderr
    stats = real_host.stats()
    assert stats["tasks_created_total"] == 6  # every job submitted for real
    assert stats["paid_outputs_unfetched"] == 0
    real_dir = Path(next(line.split("run dir: ", 1)[1] for line in real.stdout.splitlines()
                         if line.startswith("run dir: ")))
    report = report_of(real_dir)
    assert report["run"]["emulated"] is False
    assert report["run"]["emulated_providers"] == []
    assert not any(job["emulated"] for job in report["jobs"])
    assert report["totals"]["reused"] == 0
    # which package (and version) served each provider, in the report and the lockfile
    served = {"distribution": "seedbatch", "version": __version__}
    assert {name: {k: v for k, v in origin.items() if k != "entry_point"}
            for name, origin in report["run"]["providers"].items()} == {"pixwith": served,
                                                                 "wiro": served}
    assert report["run"]["providers"]["wiro"]["entry_point"] == "wiro = runner.hosts.wiro:SPEC"
    lock_doc = json.loads(lock.read_text(encoding="utf-8"))
    assert lock_doc["providers"] == {"pixwith": served, "wiro": served}
    locked = lock_doc["jobs"]
    assert {entry["run_id"] for entry in locked.values()} == {real_dir.name}
    assert len(locked) == 6

    # a second real run reuses the real outputs, and only those: nothing is sent
    lock_before = lock.read_bytes()
    third = cli("run", str(manifest), "--yes", "--runs-dir", runs, env=env_at(real_host))
    assert third.returncode == 0, third.stderr
    assert real_host.stats()["tasks_created_total"] == 6
    assert "6 reused" in third.stdout + third.stderr
    assert lock.read_bytes() == lock_before


def test_a_base_url_that_is_an_emulator_counts_as_emulated(tmp_path: Path) -> None:
    manifest = tmp_path / "safety.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=0.1)) as server:  # `seedbatch emulate`
        first = cli("run", str(manifest), "--yes", "--runs-dir", str(runs), env=env_at(server))
        assert first.returncode == 0, first.stderr
        assert server.stats()["tasks_created_total"] == 6
    run_dir = only_run_dir(runs)
    report = report_of(run_dir)
    assert report["run"]["emulated"] is True
    assert all(job["emulated"] for job in report["jobs"])
    assert not (tmp_path / "safety.lock.json").exists()
    with Journal.open(run_dir / "journal.sqlite") as journal:
        assert journal.get_meta("emulate") == "external"
        assert journal.get_meta("emulated_providers") == ["pixwith", "wiro"]
    # its outputs are placeholders: a --emulate run may reuse them, a real plan may not
    again = cli("plan", str(manifest), "--runs-dir", str(runs), "--emulate", "--json",
                env=env_at(None))
    assert {j["status"] for j in json.loads(again.stdout)["jobs"]} == {"cached"}
    real = cli("plan", str(manifest), "--runs-dir", str(runs), "--json", env=env_at(None))
    assert {j["status"] for j in json.loads(real.stdout)["jobs"]} == {"new"}


def test_an_interrupted_rehearsal_says_resume_with_emulate(tmp_path: Path) -> None:
    manifest = tmp_path / "safety.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    # 6 jobs one at a time, 3 s each: the signal surely comes while most are still pending
    proc = start_cli("run", str(manifest), "--emulate", "--emulate-latency", "3",
                     "--concurrency", "1", "--yes", "--runs-dir", str(runs), env=env_at(None))
    try:
        wait_for(lambda: any(s.attached for s in journal_states(only_run_dir(runs)).values()),
                 "a task in flight")
        proc.send_signal(signal.SIGINT)  # stop submitting; the tasks in flight finish
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run_dir = only_run_dir(runs)
    assert f"continue with: seedbatch resume {run_dir} --emulate" in out + err
    resumed = cli("resume", str(run_dir), "--emulate", "--emulate-latency", "0.1",
                  env=env_at(None))
    assert resumed.returncode == 0, resumed.stderr
    assert set(journal_states(run_dir).values()) == {JobState.SUCCEEDED}


def test_cancel_while_running_waits_for_tasks_pixwith_cannot_stop(tmp_path: Path,
                                                                   real_host: Any) -> None:
    manifest = tmp_path / "pix.yaml"
    manifest.write_text(PIXWITH_ONLY, encoding="utf-8")
    runs = tmp_path / "runs"
    set_clock(real_host, freeze=True)  # time stands still: tasks stay unfinished…
    proc = start_cli("run", str(manifest), "--yes", "--runs-dir", str(runs),
                     env=env_at(real_host))
    cancel: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: sum(s.attached for s in journal_states(only_run_dir(runs)).values())
                 == 2, "both tasks submitted")
        run_dir = only_run_dir(runs)
        cancel = start_cli("cancel", str(run_dir), "--wait", "120", env=env_at(real_host))

        def ran_on() -> int:
            with Journal.open(run_dir / "journal.sqlite") as journal:
                return len(journal.events(kind="cancel_unsupported"))

        wait_for(lambda: ran_on() == 2, "the cancel to be refused by Pixwith")
        status = json.loads(cli("status", str(run_dir), "--json", env=env_at(real_host)).stdout)
        assert status["ran_on_after_cancel"]["jobs"] == 2
        assert {j["state"] for j in status["jobs"]} <= {"submitted", "running"}
        set_clock(real_host, freeze=False, advance=60)  # …until now: they finish, billed
        _, err = proc.communicate(timeout=120)
        _, cancel_err = cancel.communicate(timeout=120)
    finally:
        for p in (proc, cancel):
            if p is not None and p.poll() is None:
                p.kill()
    assert proc.returncode == 130, err
    assert "cannot be cancelled" in err
    assert cancel is not None
    assert cancel.returncode == 0, cancel_err
    stats = real_host.stats()
    assert stats["tasks_billed"] == 2
    assert stats["paid_outputs_unfetched"] == 0  # the cancelling process downloaded them
    assert set(journal_states(run_dir).values()) == {JobState.SUCCEEDED}
    status = json.loads(cli("status", str(run_dir), "--json", env=env_at(real_host)).stdout)
    assert status["ran_on_after_cancel"]["jobs"] == 2
    assert status["ran_on_after_cancel"]["credits"] == stats["billed_credits"]
    assert all(j["ran_on_after_cancel"] for j in status["jobs"])
    report = report_of(run_dir)
    assert report["totals"]["ran_on_after_cancel"] == {
        "jobs": 2, "cost_usd": 0.0, "credits": stats["billed_credits"]}
    assert all(j["ran_on_after_cancel"] for j in report["jobs"])


def test_cancel_after_a_kill_then_resume_downloads_every_paid_output(
        tmp_path: Path, real_host: Any) -> None:
    manifest = tmp_path / "pix.yaml"
    manifest.write_text(PIXWITH_ONLY, encoding="utf-8")
    runs = tmp_path / "runs"
    set_clock(real_host, freeze=True)
    proc = start_cli("run", str(manifest), "--yes", "--runs-dir", str(runs),
                     env=env_at(real_host))
    try:
        wait_for(lambda: sum(s.attached for s in journal_states(only_run_dir(runs)).values())
                 == 2, "both tasks submitted")
    finally:
        proc.kill()  # kill -9: nothing of the process survives but its journal
        proc.communicate(timeout=60)
    run_dir = only_run_dir(runs)
    cancel = cli("cancel", str(run_dir), env=env_at(real_host))
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled 0 remote tasks" in cancel.stdout
    assert "2 tasks cannot be cancelled" in cancel.stderr
    shown = cli("status", str(run_dir), env=env_at(real_host)).stdout
    assert shown.count("running (cannot be cancelled)") == 2
    assert "ran on after a cancel (the host cannot stop a task): 2 jobs" in shown
    set_clock(real_host, freeze=False, advance=60)
    resumed = cli("resume", str(run_dir), env=env_at(real_host))
    assert resumed.returncode == 0, resumed.stderr
    stats = real_host.stats()
    assert stats["tasks_created_total"] == 2  # never sent twice
    assert stats["tasks_billed"] == 2
    assert stats["paid_outputs_unfetched"] == 0
    assert set(journal_states(run_dir).values()) == {JobState.SUCCEEDED}
