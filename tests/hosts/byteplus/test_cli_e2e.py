"""BytePlus end to end through the real command line (``python -m runner`` as a process)
against the emulator on a loopback socket: a run with sets, a partial failure, a failed
generation and reference images (a URL and a local file); a cancel while the calls are
held; injected 429/5xx/drops with nothing paid twice unasked; paid answers whose downloads
failed, then resumed; kill -9 while the calls are in the air, resumed as unknown outcomes.

What is asserted is counted (the emulator's ``/__stats``, the journal), never timed: the
emulator's clock is frozen and moved by hand where a call must stay in flight. Time limits
are hang guards only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import report_of
from PIL import Image

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread
from runner.errors import RunDirError
from runner.execute.journal import JobState, Journal

pytestmark = pytest.mark.e2e

HANG_GUARD = 240
CALLS = "POST /byteplus/api/v3/images/generations"

RUN = """\
version: 1
name: bp
models:
  b4: {model: byteplus/seedream-4-0, params: {size: 2K}}
  b45: {model: byteplus/seedream-4-5, params: {size: 2560x1440}}
jobs:
  - name: set
    model: b45
    prompt: "a kite festival, three moments"
    params: {sequential_image_generation: auto, stream: true,
             sequential_image_generation_options: {max_images: 3}}
  - name: partial
    model: b4
    prompt: "a kite festival emulator:fail"
    params: {sequential_image_generation: auto,
             sequential_image_generation_options: {max_images: 2}}
  - name: doomed
    model: b4
    prompt: "a lone kite emulator:fail"
  - name: edit
    model: b4
    images: [https://cdn.example/style.png, ref.png]
    prompt: "the kite from image 2 in the style of image 1"
"""

MANY = """\
version: 1
name: bp-many
models:
  b4: {model: byteplus/seedream-4-0, params: {size: 1K}}
jobs:
  - name: "kite-{{ index }}"
    model: b4
    prompt: "kite number {{ index }}"
    repeat: %d
limits:
  byteplus: {concurrency: %d}
"""


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, text=True,
                          capture_output=True, timeout=HANG_GUARD, check=False)


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def env_at(server: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARK_", "BYTEPLUS_"))}
    env.update(demo_credentials())
    env["BYTEPLUS_BASE_URL"] = server.base_url("byteplus")
    return env


def control(server: Any, what: str, **body: Any) -> None:
    httpx.post(f"{server.url}/__{what}", json=body, timeout=10).raise_for_status()


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD  # a hang guard, not a speed claim
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def run_dir_of(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()] if runs.is_dir() else []
    return dirs[0] if len(dirs) == 1 else Path("/nonexistent")


def states(run_dir: Path) -> dict[str, JobState]:
    try:
        with Journal.open(run_dir / "journal.sqlite") as journal:
            return {r.name: r.state for r in journal.jobs()}
    except RunDirError:
        return {}


@pytest.fixture
def server() -> Iterator[Any]:
    with serve_in_thread(EmulatorConfig(latency=0.5, seed=11)) as srv:
        yield srv


def test_a_run_delivers_sets_partial_failures_and_edits_and_costs_images_made(
        tmp_path: Path, server: Any) -> None:
    (tmp_path / "run.yaml").write_text(RUN, encoding="utf-8")
    Image.new("RGB", (16, 16), "orange").save(tmp_path / "ref.png")
    proc = cli("run", str(tmp_path / "run.yaml"), "--yes", "--runs-dir",
               str(tmp_path / "runs"), env=env_at(server))
    assert proc.returncode == 1, proc.stderr  # "doomed" failed
    assert "Traceback" not in proc.stdout + proc.stderr
    stats = server.stats()
    run_dir = run_dir_of(tmp_path / "runs")
    jobs = {j["name"]: j for j in report_of(run_dir)["jobs"]}
    assert {n: j["status"] for n, j in jobs.items()} == {
        "set": "succeeded", "partial": "succeeded", "doomed": "failed", "edit": "succeeded"}
    assert [len(jobs[n]["outputs"]) for n in ("set", "partial", "edit")] == [3, 1, 1]
    assert "OutputImageSensitiveContentDetected" in jobs["doomed"]["error"]
    assert jobs["set"]["cost_usd"] == pytest.approx(3 * 0.04)
    assert jobs["partial"]["cost_usd"] == pytest.approx(0.03)  # one of two made
    assert jobs["edit"]["params"]["watermark"] is False
    assert report_of(run_dir)["totals"]["cost_usd"] == pytest.approx(stats["billed_usd"])
    assert stats["tasks_created_total"] == 4
    assert stats["images_billed"] == 5
    assert stats["duplicate_paid"] == 0
    assert stats["paid_outputs_unfetched"] == 0
    edit = next(t for t in server.app.state.emulator.tasks.values() if "style" in t.prompt)
    assert edit.inputs[0] == "https://cdn.example/style.png"
    assert edit.inputs[1].startswith("sha256:")  # the local file, sent as a data URI


def test_a_cancel_lets_the_calls_in_flight_finish_and_downloads_them(
        tmp_path: Path, server: Any) -> None:
    (tmp_path / "many.yaml").write_text(MANY % (2, 2), encoding="utf-8")
    runs = tmp_path / "runs"
    control(server, "clock", freeze=True)  # the calls are held until the clock moves
    proc = start("run", str(tmp_path / "many.yaml"), "--yes", "--runs-dir", str(runs),
                 env=env_at(server))
    cancel: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: server.stats()["active_tasks"]["byteplus"] == 2, "two calls held")
        run_dir = run_dir_of(runs)
        cancel = start("cancel", str(run_dir), "--wait", "200", env=env_at(server))

        def ran_on() -> int:
            with Journal.open(run_dir / "journal.sqlite") as journal:
                return len(journal.events(kind="cancel_unsupported"))

        wait_for(lambda: ran_on() == 2, "both calls to be left running")
        control(server, "clock", freeze=False, advance=60)
        _, err = proc.communicate(timeout=HANG_GUARD)
        _, cancel_err = cancel.communicate(timeout=HANG_GUARD)
    finally:
        for p in (proc, cancel):
            if p is not None and p.poll() is None:
                p.kill()
    assert proc.returncode == 130, err
    assert "cannot be cancelled" in err
    assert cancel.returncode == 0, cancel_err
    stats = server.stats()
    assert stats["images_billed"] == 2
    assert stats["paid_outputs_unfetched"] == 0  # nothing paid was lost
    assert set(states(run_dir).values()) == {JobState.SUCCEEDED}
    assert report_of(run_dir)["totals"]["ran_on_after_cancel"]["jobs"] == 2


def test_faults_never_resend_a_call_unasked_and_retry_unknown_pays_exactly_the_lost_ones(
        tmp_path: Path) -> None:
    (tmp_path / "many.yaml").write_text(MANY % (12, 4), encoding="utf-8")
    runs = tmp_path / "runs"
    config = EmulatorConfig(latency=0.05, seed=5, faults="429=0.2,5xx=0.15,drop=0.2")
    with serve_in_thread(config) as srv:
        first = cli("run", str(tmp_path / "many.yaml"), "--yes", "--runs-dir", str(runs),
                    env=env_at(srv))
        assert "Traceback" not in first.stdout + first.stderr
        stats = srv.stats()
        run_dir = run_dir_of(runs)
        got = states(run_dir)
        lost = stats["tasks_answer_lost"]  # dropped after the images were made
        dropped = stats["responses_by_endpoint"][CALLS].get("dropped", 0)  # before or after
        assert lost == stats["faults"]["drop_after"]
        assert 0 < lost < dropped  # seed 5 meets both kinds of drop
        # every call whose answer was lost is unknown; every other job was delivered
        assert sum(s is JobState.UNKNOWN for s in got.values()) == dropped
        assert sum(s is JobState.SUCCEEDED for s in got.values()) == 12 - dropped
        assert stats["duplicate_paid"] == 0
        assert stats["images_billed"] == 12 - dropped + lost
        assert stats["paid_outputs_unfetched"] == lost  # made, billed, answer lost
        control(srv, "faults", faults="")
        again = cli("resume", str(run_dir), "--retry-unknown", env=env_at(srv))
        assert again.returncode == 0, again.stderr
        after = srv.stats()
    assert set(states(run_dir).values()) == {JobState.SUCCEEDED}
    assert after["duplicate_paid"] == lost  # exactly the calls the user chose to resend


def test_paid_answers_whose_downloads_failed_resume_to_their_journaled_links(
        tmp_path: Path, server: Any) -> None:
    (tmp_path / "many.yaml").write_text(MANY % (3, 3), encoding="utf-8")
    runs = tmp_path / "runs"
    control(server, "faults", faults="truncate=1")  # every download breaks off
    first = cli("run", str(tmp_path / "many.yaml"), "--yes", "--runs-dir", str(runs),
                env=env_at(server))
    assert first.returncode == 1, first.stderr
    run_dir = run_dir_of(runs)
    with Journal.open(run_dir / "journal.sqlite") as journal:
        assert all(r.paid_not_downloaded and r.answered_at_submit for r in journal.jobs())
    control(server, "faults", faults="")
    resumed = cli("resume", str(run_dir), env=env_at(server))
    assert resumed.returncode == 0, resumed.stderr
    stats = server.stats()
    assert stats["tasks_created_total"] == 3  # never sent again
    assert stats["paid_outputs_unfetched"] == 0
    assert set(states(run_dir).values()) == {JobState.SUCCEEDED}


def test_kill_9_while_calls_are_in_the_air_resumes_them_as_unknown(
        tmp_path: Path, server: Any) -> None:
    (tmp_path / "many.yaml").write_text(MANY % (2, 2), encoding="utf-8")
    runs = tmp_path / "runs"
    control(server, "clock", freeze=True)
    proc = start("run", str(tmp_path / "many.yaml"), "--yes", "--runs-dir", str(runs),
                 env=env_at(server))
    try:
        wait_for(lambda: server.stats()["active_tasks"]["byteplus"] == 2, "two calls held")
    finally:
        proc.kill()  # kill -9: the calls' answers are lost with the process
        proc.communicate(timeout=60)
    run_dir = run_dir_of(runs)
    assert set(states(run_dir).values()) == {JobState.SUBMITTING}
    control(server, "clock", freeze=False, advance=60)  # the generations end, billed
    resumed = cli("resume", str(run_dir), env=env_at(server))
    assert "unknown" in resumed.stdout + resumed.stderr
    assert set(states(run_dir).values()) == {JobState.UNKNOWN}
    stats = server.stats()
    assert stats["tasks_created_total"] == 2  # never resent unasked
    assert stats["paid_outputs_unfetched"] == 2  # the documented cost of a lost answer
    retried = cli("resume", str(run_dir), "--retry-unknown", env=env_at(server))
    assert retried.returncode == 0, retried.stderr
    assert set(states(run_dir).values()) == {JobState.SUCCEEDED}
    assert server.stats()["duplicate_paid"] == 2
