"""End to end through the real command line: ``seedbatch run MANIFEST --yes`` as a process,
against the emulator on a loopback socket, one job's task ending in Wiro's ``task_error``.

Task/Detail's ``status: "task_error"`` is a terminal pre-execution failure (PROVIDERS.md):
the job must fail at the first poll that sees it, with the task's ``debugerror`` as its
reason and no cost, while the run's other jobs are delivered. Before this was understood,
such a task was polled until ``task_timeout`` (30 minutes) and left for resume.

What is checked is counted, never timed: the emulator counts the Task/Detail answers it
gave for the task after the task had failed (exactly one: the answer that ended the job),
and the journal's poll count for the job equals the Task/Detail answers for its task. The
process's time limit is a hang guard only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread
from runner.emulator.wiro import TASK_ERROR_TEXT as WIRO_TASK_ERROR_TEXT
from runner.execute.journal import Journal

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 180  # seconds; the run needs a few

MANIFEST = """\
version: 1
name: task-error
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K, aspect_ratio: "1:1"}}
jobs:
  - name: doomed
    model: v4
    prompt: "a lighthouse in the fog emulator:task_error"
  - name: dawn
    model: v4
    prompt: "a lighthouse at dawn"
  - name: noon
    model: v4
    prompt: "a lighthouse at noon"
  - name: night
    model: pix
    prompt: "a lighthouse at night"
"""


def seedbatch() -> list[str]:
    """The installed ``seedbatch`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("seedbatch")
    assert script.is_file(), f"{script} is missing: pip install -e . first"
    return [str(script)]


def test_a_task_error_job_fails_at_once_with_its_reason_and_the_rest_deliver(
        tmp_path: Path) -> None:
    manifest = tmp_path / "task-error.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    with serve_in_thread(EmulatorConfig(latency=1.0, seed=5)) as server:
        env = {k: v for k, v in os.environ.items()
               if k not in ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY")}
        env.update(demo_credentials())
        env.update(WIRO_BASE_URL=server.wiro_base_url, PIXWITH_BASE_URL=server.pixwith_base_url)
        proc = subprocess.run([*seedbatch(), "run", str(manifest), "--yes", "--runs-dir",
                               str(runs)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=HANG_GUARD)
        stats = server.stats()
        tasks = {t.prompt: t for t in server.app.state.emulator.tasks.values()}

    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output  # a job failed
    assert "Traceback" not in output
    [run_dir] = [p for p in runs.iterdir() if p.is_dir()]
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    jobs = {j["name"]: j for j in report["jobs"]}

    doomed = jobs["doomed"]
    assert doomed["status"] == "failed"
    assert doomed["error"] == f"task failed: {WIRO_TASK_ERROR_TEXT}"
    assert not doomed["cost_usd"]
    assert doomed["outputs"] == []
    for name in ("dawn", "noon", "night"):
        assert jobs[name]["status"] == "succeeded", jobs[name]
        assert len(jobs[name]["outputs"]) == 1
    assert report["totals"]["by_status"]["succeeded"] == 3
    assert report["totals"]["by_status"]["failed"] == 1
    assert report["totals"]["cost_usd"] == pytest.approx(stats["billed_usd"])
    assert report["totals"]["cost_usd"] == pytest.approx(2 * 0.03)  # the two Wiro successes

    # The emulator's side: one task per job, the doomed one ended in task_error, unbilled.
    assert stats["tasks_created_total"] == 4
    assert stats["tasks_task_error"] == 1
    assert stats["tasks_billed"] == 3
    assert stats["duplicate_paid"] == 0
    task = tasks["a lighthouse in the fog emulator:task_error"]
    assert task.task_error
    assert task.id == doomed["task_id"]
    # Ended by the first answer that showed task_error: never polled again after that.
    assert task.polls_after_end == 1
    assert task.polls >= 1
    with Journal.open(run_dir / "journal.sqlite") as journal:
        polls = {rec.name: rec.polls for rec in journal.jobs()}
    assert polls["doomed"] == task.polls  # every Task/Detail answer reached the journal
