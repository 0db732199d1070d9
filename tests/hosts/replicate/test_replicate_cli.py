"""End to end on Replicate: the real command line (``python -m runner``, a process of its
own) and the library API against the emulator on a loopback socket — success, a failed
generation, reference images (a URL, a small and a large local file), cancel, injected
429/5xx/drops, kill -9 and resume — each checked against the emulator's own counters.

Nothing is timed: tasks are held unfinished by freezing the emulator's clock and finished
by moving it; the faults met are exactly those the seed gives the decisions made
(``expected_faults``); time limits are hang guards only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import journal_states, only_run_dir, set_clock, wait_for
from replicate_support import png_file

from runner import api
from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread
from runner.emulator.faults import expected_faults
from runner.emulator.replicate import FAILURE_TEXT
from runner.execute.executor import ExecutorOptions
from runner.execute.journal import JobState
from runner.execute.policy import PollSettings
from runner.report.verify import verify_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
HANG_GUARD = 180.0
CREATE = "POST /replicate/v1/models/{owner}/{name}/predictions"


def env_at(server: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    env.update(demo_credentials())
    env["REPLICATE_BASE_URL"] = server.replicate_base_url
    return env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=ROOT,
                          text=True, capture_output=True, timeout=HANG_GUARD, check=False)


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def report_of(run_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    return report


def tasks_of(server: Any) -> dict[str, Any]:
    """The emulator's Replicate predictions, by prompt."""
    return {t.prompt: t for (p, _), t in server.app.state.emulator.tasks.items()
            if p == "replicate"}


MANIFEST = """\
version: 1
name: replicate-e2e
models:
  r45: {model: replicate/seedream-4.5, params: {size: custom, width: 2048, height: 1152}}
  r4: {model: replicate/seedream-4, params: {size: 1K, aspect_ratio: "1:1",
       sequential_image_generation: auto, max_images: 2}}
jobs:
  - name: plain
    model: r45
    prompt: "a harbour at dawn"
  - name: set
    model: r4
    prompt: "a harbour at noon, two views"
  - name: doomed
    model: r45
    prompt: "a harbour at night emulator:fail"
  - name: edit
    model: r45
    prompt: "the harbour in winter"
    images: ["https://example.com/harbour.jpg", small.png, large.png]
"""


def test_a_run_delivers_fails_what_failed_and_sends_every_kind_of_reference(
        tmp_path: Path) -> None:
    small = png_file(tmp_path / "small.png")
    large = png_file(tmp_path / "large.png", (700, 700), noise=True)
    manifest = tmp_path / "replicate.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=0.3, seed=11)) as server:
        done = cli("run", str(manifest), "--yes", "--runs-dir", str(runs), env=env_at(server))
        stats = server.stats()
        tasks = tasks_of(server)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # one job failed
    assert "Traceback" not in output
    assert demo_credentials()["REPLICATE_API_TOKEN"] not in output
    run_dir = only_run_dir(runs)
    report = report_of(run_dir)
    jobs = {j["name"]: j for j in report["jobs"]}
    assert {n: j["status"] for n, j in jobs.items()} == {
        "plain": "succeeded", "set": "succeeded", "doomed": "failed", "edit": "succeeded"}
    assert jobs["doomed"]["error"] == f"task failed: {FAILURE_TEXT}"
    assert not jobs["doomed"]["cost_usd"]
    assert [len(jobs[n]["outputs"]) for n in ("plain", "set", "edit")] == [1, 2, 1]
    # Replicate reports no cost: the report charges list price × images, marked estimated,
    # which is what the emulator billed
    assert [jobs[n]["cost_estimated"] for n in ("plain", "set", "edit", "doomed")] == [
        True, True, True, False]
    assert report["totals"]["cost_usd"] == pytest.approx(0.04 + 2 * 0.03 + 0.04)
    assert report["totals"]["estimated_usd"] == pytest.approx(report["totals"]["cost_usd"])
    assert report["totals"]["cost_usd"] == pytest.approx(stats["billed_usd"])
    assert verify_run(run_dir).intact

    edit = tasks["the harbour in winter"]
    assert edit.inputs == ("https://example.com/harbour.jpg", f"sha256:{small.sha256}",
                           f"sha256:{large.sha256}")
    assert edit.input["image_input"][1].startswith("data:image/png;base64,")
    assert stats["uploads"] == 1  # the large file, through the Files API
    assert (tasks["a harbour at dawn"].width, tasks["a harbour at dawn"].height) == (2048, 1152)
    assert stats["tasks_created_total"] == 4
    assert stats["tasks_failed"] == 1
    assert stats["tasks_billed"] == 3
    assert stats["duplicate_paid"] == 0
    assert stats["paid_outputs_unfetched"] == 0


TWO_JOBS = """\
version: 1
name: replicate-hold
matrix:
  i: [0, 1]
models:
  r45: {model: replicate/seedream-4.5}
jobs:
  - name: "pic-{{ i }}"
    model: r45
    prompt: "picture number {{ i }}"
"""


def start_held(server: Any, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``run`` of TWO_JOBS in a process, the emulator's clock frozen (the predictions stay
    unfinished); returns once both predictions are created, with the runs folder."""
    manifest = tmp_path / "two.yaml"
    manifest.write_text(TWO_JOBS, encoding="utf-8")
    runs = tmp_path / "runs"
    set_clock(server, freeze=True)
    proc = start_cli("run", str(manifest), "--yes", "--runs-dir", str(runs),
                     env=env_at(server))
    try:
        wait_for(lambda: sum(s.attached for s in journal_states(only_run_dir(runs))
                             .values()) == 2, "both predictions created")
    except BaseException:
        proc.kill()
        raise
    return proc, runs


def test_cancel_stops_the_predictions_and_nothing_is_billed(tmp_path: Path) -> None:
    with serve_in_thread(EmulatorConfig(latency=0.3, seed=2)) as server:
        env = env_at(server)
        proc, runs = start_held(server, tmp_path)
        try:
            cancel = cli("cancel", str(only_run_dir(runs)), "--wait", "120", env=env)
            _, err = proc.communicate(timeout=HANG_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
        set_clock(server, freeze=False, advance=60)  # …and would have ended by now
        stats = server.stats()
        statuses = {t.outcome for t in tasks_of(server).values()}
    assert cancel.returncode == 0, cancel.stderr
    assert proc.returncode == 130, err
    assert statuses == {"cancelled"}
    assert stats["tasks_cancelled"] == 2
    assert stats["tasks_billed"] == 0
    assert stats["requests_by_endpoint"]["POST /replicate/v1/predictions/{id}/cancel"] == 2
    assert set(journal_states(only_run_dir(runs)).values()) == {JobState.CANCELLED}


def test_kill_9_then_resume_pays_once_and_delivers_every_output(tmp_path: Path) -> None:
    with serve_in_thread(EmulatorConfig(latency=0.3, seed=3)) as server:
        env = env_at(server)
        proc, runs = start_held(server, tmp_path)
        proc.kill()  # kill -9: nothing survives but the journal
        proc.communicate(timeout=60)
        run_dir = only_run_dir(runs)
        set_clock(server, freeze=False, advance=60)  # they ended while nobody watched
        resumed = cli("resume", str(run_dir), env=env)
        stats = server.stats()
    assert resumed.returncode == 0, resumed.stderr
    assert stats["tasks_created_total"] == 2  # never created again
    assert stats["tasks_billed"] == 2
    assert stats["duplicate_paid"] == 0
    assert stats["paid_outputs_unfetched"] == 0
    assert set(journal_states(run_dir).values()) == {JobState.SUCCEEDED}
    assert verify_run(run_dir).intact


FAULTS = "429=0.15,5xx=0.1,drop=0.08"
SEED = 20260101
JOBS = 24


def test_injected_429_5xx_and_drops_deliver_every_recoverable_job_and_pay_once(
        tmp_path: Path) -> None:
    manifest = tmp_path / "many.yaml"
    manifest.write_text(f"""\
version: 1
name: replicate-chaos
matrix:
  i: [{", ".join(str(i) for i in range(JOBS))}]
models:
  r4: {{model: replicate/seedream-4, params: {{size: 1K}}}}
jobs:
  - name: "pic-{{{{ i }}}}"
    model: r4
    prompt: "chaos picture {{{{ i }}}}"
limits:
  replicate: {{concurrency: 8, requests_per_minute: 1000000}}
""", encoding="utf-8")
    cfg = EmulatorConfig(latency=0.25, seed=SEED, faults=FaultSpec.parse(FAULTS))
    options = ExecutorOptions(
        submit_failures=20, poll_attempts=20, download_attempts=20,
        poll=PollSettings(initial_guess=0.25, min_step=0.05, max_step=0.5),
        initial_guess={"replicate": 0.25}, retry_wait_initial=0.05, retry_wait_max=0.5,
        limited_wait_initial=0.05, download_backoff=0.05, cooldown=0.2)
    with serve_in_thread(cfg) as server:
        result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_at(server),
                         options=options)
        time.sleep(cfg.latency + 0.1)  # predictions of lost creates end (and bill)
        stats = server.stats()
        tasks = tasks_of(server)
    report = report_of(result.run_dir)
    jobs = report["jobs"]
    by_status = {s: [j for j in jobs if j["status"] == s] for s in ("succeeded", "unknown")}
    assert len(by_status["succeeded"]) + len(by_status["unknown"]) == JOBS  # none failed
    # The faults met are exactly those the seed gives the decisions made, and each was
    # answered as such.
    assert stats["faults"] == dict(expected_faults(FAULTS, SEED, stats["fault_decisions"]))
    assert stats["requests_by_status"].get("429", 0) == stats["faults"]["429"]
    assert sum(stats["requests_by_status"].get(c, 0) for c in ("500", "502", "503")) == \
        stats["faults"]["5xx"]
    assert stats["requests_by_status"].get("dropped", 0) == stats["faults"]["drop"]
    # A create whose answer was lost is unknown, never resent; every other job delivered.
    creates = stats["responses_by_endpoint"].get(CREATE, {})
    assert len(by_status["unknown"]) == creates.get("dropped", 0)
    assert sum(j["attempts"] for j in jobs) == sum(creates.values())
    for job in by_status["unknown"]:
        assert job["task_id"] is None
    claimed = {j["task_id"] for j in by_status["succeeded"]}
    orphans = [t for t in tasks.values() if t.id not in claimed]
    assert all(t.answer_lost for t in orphans)
    assert {t.prompt for t in orphans} <= {j["prompt"] for j in by_status["unknown"]}
    assert len({t.prompt for t in orphans}) == len(orphans)  # one create per lost answer
    assert stats["duplicate_paid"] == 0
    assert stats["tasks_billed"] == len(by_status["succeeded"]) + len(orphans)
    paid_unfetched = stats["paid_outputs_unfetched"]
    assert paid_unfetched == len(orphans)  # only what nobody could know of
    assert verify_run(result.run_dir).intact
    for job in by_status["succeeded"]:
        assert len(job["outputs"]) == 1
