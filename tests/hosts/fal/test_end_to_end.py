"""fal.ai end to end: ``seedbatch run`` / ``cancel`` / ``resume`` as processes (and, for the
fault storm, ``runner.run`` in process with short waits) against the emulator on a real
loopback socket. Every run ends with :func:`fal_support.audit`: every job accounted for,
each output byte for byte what the emulator served, nothing paid twice, nothing paid left
behind, one request per job.

Conditions are forced, never waited for by luck: requests are held queued or running by
freezing the emulator's clock (``POST /__clock``) and finished by moving it a minute on;
injected faults are checked exactly against what the seed gives the decisions made
(``expected_faults``). Time limits are hang guards only.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import cli, journal_states, only_run_dir, set_clock, start_cli, wait_for
from fal_support import audit, env_at, fal_submits, fal_tasks

from runner import api
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread
from runner.emulator.faults import expected_faults
from runner.execute.executor import ExecutorOptions
from runner.execute.journal import JobState, Journal
from runner.execute.policy import PollSettings
from runner.providers.fal import decode_task_id

pytestmark = pytest.mark.e2e

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")

MANIFEST = """\
version: 1
name: fal-e2e
image_sets:
  refs: [ref.png, https://img.test/style.png]
models:
  v4: {model: fal/seedream-v4, params: {num_images: 2}}
  v45: {model: fal/seedream-v4.5, params: {image_size: {width: 2560, height: 1440}}}
jobs:
  - name: "harbour-{{ model.alias }}"
    model: [v4, v45]
    prompt: "a harbour at dawn, {{ model.alias }}"
  - name: doomed
    model: v4
    prompt: "a harbour in a storm emulator:fail"
  - name: edit
    model: v45
    images: [refs]
    prompt: "the boat of image 1 in the style of image 2"
"""

HELD = """\
version: 1
name: fal-held
matrix:
  i: [0, 1, 2]
models:
  v4: {model: fal/seedream-v4}
jobs:
  - name: "lamp-{{ i }}"
    model: v4
    prompt: "a paper lamp, number {{ i }}"
"""


def write(folder: Path, text: str, name: str = "fal.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_run_delivers_text_to_image_and_edits_and_reports_a_failed_generation(
        tmp_path: Path) -> None:
    (tmp_path / "ref.png").write_bytes(PNG)
    manifest = write(tmp_path, MANIFEST)
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=0.3, seed=1)) as server:
        proc = cli("run", str(manifest), "--yes", "--runs-dir", str(runs), env=env_at(server))
        assert proc.returncode == 1, proc.stderr  # one job failed
        run_dir = only_run_dir(runs)
        report, statuses = audit(run_dir, server, jobs=4)
        stats = server.stats()
        tasks = fal_tasks(server)
    assert statuses == {"succeeded": 3, "failed": 1}
    jobs = {j["name"]: j for j in report["jobs"]}
    assert len(jobs["harbour-v4"]["outputs"]) == 2
    assert report["totals"]["cost_usd"] == pytest.approx(2 * 0.03 + 0.04 + 0.04)
    assert report["totals"]["estimated_usd"] == pytest.approx(report["totals"]["cost_usd"])
    assert jobs["doomed"]["cost_estimated"] is False
    assert stats["tasks_billed"] == 3
    assert stats["paid_outputs_unfetched"] == 0
    doomed = jobs["doomed"]
    assert "The image could not be generated" in doomed["error"]
    assert "downstream_service_error" in doomed["error"]
    edit = tasks[decode_task_id("http://x/fal", jobs["edit"]["task_id"]).request_id]
    assert edit.endpoint == "fal-ai/bytedance/seedream/v4.5/edit"
    assert edit.inputs == (f"sha256:{hashlib.sha256(PNG).hexdigest()}",
                           "https://img.test/style.png")
    assert (edit.width, edit.height) == (2560, 1440)
    harbour = tasks[decode_task_id("http://x/fal", jobs["harbour-v4"]["task_id"]).request_id]
    assert harbour.endpoint == "fal-ai/bytedance/seedream/v4/text-to-image"


def killed_with_requests_queued(server: Any, manifest: Path, runs: Path) -> Path:
    """``seedbatch run`` killed with -9 once every job's request is queued (the emulator's
    clock frozen: they stay queued until a test moves it); the run directory."""
    set_clock(server, freeze=True)
    proc = start_cli("run", str(manifest), "--yes", "--runs-dir", str(runs), env=env_at(server))
    try:
        wait_for(lambda: sum(s.attached for s in journal_states(only_run_dir(runs)).values())
                 == 3, "all three requests queued")
    finally:
        proc.kill()  # kill -9: nothing of the process survives but its journal
        proc.communicate(timeout=60)
    return only_run_dir(runs)


def test_a_killed_run_resumes_without_sending_anything_twice(tmp_path: Path) -> None:
    manifest = write(tmp_path, HELD)
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=0.5, seed=2)) as server:
        run_dir = killed_with_requests_queued(server, manifest, runs)
        set_clock(server, freeze=False, advance=60)  # they complete, billed
        resumed = cli("resume", str(run_dir), env=env_at(server))
        assert resumed.returncode == 0, resumed.stderr
        _, statuses = audit(run_dir, server, jobs=3)
        stats = server.stats()
    assert statuses == {"succeeded": 3}
    assert stats["tasks_created_total"] == 3  # never sent twice
    assert fal_submits(stats) == 3
    assert stats["tasks_billed"] == 3
    assert stats["paid_outputs_unfetched"] == 0
    assert set(journal_states(run_dir).values()) == {JobState.SUCCEEDED}


def test_cancel_removes_queued_requests_and_a_running_one_runs_on_to_be_downloaded(
        tmp_path: Path) -> None:
    manifest = write(tmp_path, HELD)
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=4.0, seed=3)) as server:
        run_dir = killed_with_requests_queued(server, manifest, runs)
        # one request has been picked up by a runner (IN_PROGRESS), two wait in the queue
        running = next(iter(fal_tasks(server).values()))
        running.created -= 2.0  # half its latency ago: past the queue's quarter
        cancel = cli("cancel", str(run_dir), env=env_at(server))
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelled 2 remote tasks" in cancel.stdout
        assert "1 task cannot be cancelled" in cancel.stderr
        set_clock(server, freeze=False, advance=60)
        resumed = cli("resume", str(run_dir), env=env_at(server))
        assert resumed.returncode == 1, resumed.stderr  # not every job delivered: 2 cancelled
        assert "2 already done" in resumed.stderr
        stats = server.stats()
        assert running.outcome == "succeeded"
    assert stats["tasks_cancelled"] == 2
    assert stats["tasks_created_total"] == 3
    assert stats["tasks_billed"] == 1  # the running one ran on, was billed …
    assert stats["paid_outputs_unfetched"] == 0  # … and downloaded by resume
    assert sorted(journal_states(run_dir).values()) == sorted(
        [JobState.CANCELLED, JobState.CANCELLED, JobState.SUCCEEDED])
    with Journal.open(run_dir / "journal.sqlite") as journal:
        assert len(journal.events(kind="cancel_unsupported")) == 1


FAULTS = "429=0.15,5xx=0.1,drop=0.05,fail=0.1"
STORM_JOBS = 30


def storm_options() -> ExecutorOptions:
    """Short waits and enough tries that no job runs out of them by bad luck: what is
    checked is that retrying never loses or double-pays a job."""
    return ExecutorOptions(
        submit_failures=20, poll_attempts=20, download_attempts=20,
        poll=PollSettings(initial_guess=0.25, min_step=0.05, max_step=0.5),
        initial_guess={"fal": 0.25}, retry_wait_initial=0.05, retry_wait_max=0.5,
        limited_wait_initial=0.05, download_backoff=0.05, cooldown=0.2,
        cancel_check_interval=0.1)


def test_injected_429_5xx_and_drops_deliver_every_recoverable_job_and_pay_once(
        tmp_path: Path) -> None:
    manifest = write(tmp_path, "\n".join([
        "version: 1", "name: fal-storm", "matrix:",
        f"  n: [{', '.join(str(i) for i in range(STORM_JOBS // 2))}]",
        "models:", "  v4: {model: fal/seedream-v4}", "  v45: {model: fal/seedream-v4.5}",
        "jobs:", '  - name: "storm-{{ n }}-{{ model.alias }}"', "    model: [v4, v45]",
        '    prompt: "a lighthouse, take {{ n }}, {{ model.alias }}"',
        "limits:", "  fal: {concurrency: 8, requests_per_minute: 6000}", ""]))
    seed = 11
    cfg = EmulatorConfig(latency=0.25, seed=seed, faults=FaultSpec.parse(FAULTS))
    with serve_in_thread(cfg) as server:
        result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_at(server),
                         options=storm_options())
        time.sleep(0.3)  # requests whose submit answer was lost complete (and bill)
        report, statuses = audit(result.run_dir, server, jobs=STORM_JOBS)
        s = server.stats()
        failure_answers = server.app.state.emulator.part("fal").failure_answers
    assert result.exit_code == (0 if statuses["succeeded"] == STORM_JOBS else 1)
    assert not result.fatal
    # the faults met are exactly what the seed gives the decisions made …
    assert s["faults"] == dict(expected_faults(FAULTS, seed, s["fault_decisions"]))
    # every job submits and asks its status at least once: the seed gives those first
    # decisions 429s, 5xx and a drop, so the run met each kind at least that often
    assert s["fault_decisions"]["api"] >= 2 * STORM_JOBS
    floor = expected_faults(FAULTS, seed, {"api": 2 * STORM_JOBS})
    assert min(floor["429"], floor["5xx"], floor["drop"]) >= 1
    assert all(s["faults"][k] >= floor[k] for k in ("429", "5xx", "drop"))
    assert s["requests_by_status"].get("429", 0) == s["faults"]["429"]
    # (a failed generation's result is the model's own HTTP 500, counted by the emulator)
    assert sum(s["requests_by_status"].get(c, 0) for c in ("500", "502", "503")) == \
        s["faults"]["5xx"] + failure_answers
    assert s["requests_by_status"].get("dropped", 0) == s["faults"]["drop"]
    # … a dropped submit is exactly one unknown job, every other job is delivered unless
    # its request was given the fail fault
    assert statuses["unknown"] == fal_submits(s, "dropped")
    claimed_failures = sum(1 for j in report["jobs"] if j["status"] == "failed")
    assert claimed_failures <= s["faults"]["fail"]
    assert statuses["succeeded"] + statuses["failed"] + statuses["unknown"] == STORM_JOBS
    assert s["tasks_failed"] == s["faults"]["fail"]
    # every submit the journal counts reached the emulator once, and no other did
    assert sum(j["attempts"] for j in report["jobs"]) == fal_submits(s), (
        s["responses_by_endpoint"], statuses, [j["attempts"] for j in report["jobs"]])
