"""Shared pieces of the chaos and crash suites: manifests, fast executor options, and the
audit that holds a finished run directory against the emulator's own records."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner.config import demo_credentials
from runner.emulator.state import EmulatorState
from runner.emulator.wiro import TASK_ERROR_TEXT as WIRO_TASK_ERROR_TEXT
from runner.execute.executor import ExecutorOptions
from runner.execute.policy import PollSettings
from runner.report.verify import verify_run
from runner.resources import load_schema

ROOT = Path(__file__).resolve().parents[2]

# Aliases used by the manifests here: two Wiro models and Pixwith's.
MODELS = {
    "v4": "{model: wiro/seedream-v4, params: {size: 1024x1024}}",
    "v3": "{model: wiro/seedream-v3, params: {size: 1024x1024}}",
    "pix": '{model: pixwith/seedream-4.5, params: {resolution: 2K, aspect_ratio: "1:1"}}',
}
PROVIDER_OF = {"v4": "wiro", "v3": "wiro", "pix": "pixwith"}


def manifest_text(per_model: int, *, name: str = "chaos",
                  models: Sequence[str] = ("v4", "v3", "pix"), concurrency: int = 32) -> str:
    """``per_model`` jobs for each alias. Every job asks something different (its index is in
    the prompt), so the emulator's ``duplicate_paid`` counts only real double payments."""
    aliases = "\n".join(f"  {alias}: {MODELS[alias]}" for alias in models)
    return f"""\
version: 1
name: {name}
matrix:
  i: [{", ".join(str(i) for i in range(per_model))}]
models:
{aliases}
jobs:
  - name: "{{{{ model.alias }}}}-{{{{ i }}}}"
    model: [{", ".join(models)}]
    prompt: "chaos picture {{{{ i }}}} for {{{{ model.alias }}}}"
limits:
  wiro: {{concurrency: {concurrency}, requests_per_minute: 1000000}}
  pixwith: {{concurrency: {concurrency}, requests_per_minute: 1000000}}
"""


def write_manifest(folder: Path, text: str, name: str = "chaos.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def chaos_options(retries: int) -> ExecutorOptions:
    """Short waits (the emulator's tasks take a quarter of a second) and ``retries`` tries
    for each submit, poll and download, so that at the suite's fault rates no job runs out
    of tries by bad luck: what is checked is that retrying never loses or double-pays a job,
    not how many tries the defaults allow."""
    return ExecutorOptions(
        submit_failures=retries, poll_attempts=retries, download_attempts=retries,
        poll=PollSettings(initial_guess=0.25, min_step=0.05, max_step=0.5),
        initial_guess={"wiro": 0.25, "pixwith": 0.25},
        retry_wait_initial=0.05, retry_wait_max=0.5, limited_wait_initial=0.05,
        download_backoff=0.05, cooldown=0.2, cancel_check_interval=0.1,
    )


def env_for(server: Any) -> dict[str, str]:
    """This process's environment, pointed at ``server`` with the emulator's credentials."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY",
                        "WIRO_BASE_URL", "PIXWITH_BASE_URL")}
    env.update(demo_credentials())
    env["WIRO_BASE_URL"] = server.wiro_base_url
    env["PIXWITH_BASE_URL"] = server.pixwith_base_url
    return env


class HeldClock:
    """The emulator's clock, standing still until ``until(state)`` holds, then running on
    from where it stood. Tasks make no progress while it is held, so what needs them
    unfinished (a provider's concurrency limit being met) must happen: by construction,
    not by timing. After ``guard`` real seconds it lets go anyway, so a client that never
    brings the condition about fails the test (``released_by_condition`` is False) instead
    of hanging it.

    Bind ``state`` (``server.app.state.emulator``) before the first request."""

    def __init__(self, until: Callable[[EmulatorState], bool], guard: float = 60.0) -> None:
        self.until = until
        self.state: EmulatorState | None = None
        self.held_at = time.time()
        self.deadline = time.monotonic() + guard
        self.released_at: float | None = None
        self.released_by_condition = False

    def __call__(self) -> float:
        if self.released_at is None:
            if self.state is not None and self.until(self.state):
                self.released_by_condition = True
            elif time.monotonic() < self.deadline:
                return self.held_at
            self.released_at = time.time()
        return self.held_at + (time.time() - self.released_at)


def is_submit(endpoint: str) -> bool:
    """A ``/__stats`` endpoint label of a submit (Wiro Run, Pixwith task/create)."""
    return "/wiro/v1/Run/" in endpoint or endpoint.endswith("/pixwith/api/task/create")


def submit_responses(stats: Mapping[str, Any], status: str | None = None) -> int:
    """Submit requests the emulator answered (with ``status`` only, when given)."""
    return sum(sum(by.values()) if status is None else by.get(status, 0)
               for endpoint, by in stats["responses_by_endpoint"].items()
               if is_submit(endpoint))


@dataclass
class Audit:
    """What a run directory says, checked against what the emulator did."""

    report: dict[str, Any]
    stats: dict[str, Any]
    statuses: Counter[str]
    orphans: list[Any] = field(default_factory=list)  # tasks no job of the run claims
    jobs_by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_errors: int = 0  # failed jobs whose task ended in Wiro's task_error

    @property
    def succeeded(self) -> int:
        return self.statuses.get("succeeded", 0)

    @property
    def failed(self) -> int:
        return self.statuses.get("failed", 0)

    @property
    def unknown(self) -> int:
        return self.statuses.get("unknown", 0)

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return [j for j in self.report["jobs"] if j["status"] == status]


def emulator_tasks(server: Any) -> dict[tuple[str, str], Any]:
    """Every task the emulator created, by (provider, task id). The emulator runs in this
    process; nothing runs in its thread between requests, and the run is over."""
    return dict(server.app.state.emulator.tasks)


def audit_run(run_dir: Path, server: Any, jobs: int, *,
              stats: Mapping[str, Any] | None = None, lost_submits: int = 0) -> Audit:
    """The checks every chaos and crash test makes; returns the facts for its own.

    * report.json lists every job, each ``succeeded``, ``failed`` or ``unknown`` (nothing
      left pending or cancelled), and its totals agree;
    * every output listed re-hashes to its recorded sha256 and size (``verify``), and is
      byte for byte the image the emulator served for that job's task;
    * no task was paid for twice (``duplicate_paid == 0``), and no job has more than one
      task: each task of a job of the run is the one its journal names, or (for a job whose
      submit answer was lost, ``unknown``) the one its lost submit created;
    * tasks billed = succeeded jobs + billed tasks of unknown submits; what the report says
      was spent is what the emulator billed for the run's own tasks;
    * no partial download is left, and report.json follows its schema;
    * a failed job's task failed at the emulator, an unknown job has no task id, and both
      say why in report.json; a job whose task ended in Wiro's ``task_error`` failed with
      that task's ``debugerror`` as its reason and cost nothing;
    * every submit the emulator dropped made its job ``unknown``, and every task created by
      a submit whose answer was dropped (``tasks_answer_lost``) is an orphan; the
      emulator's failed and ``task_error`` tasks are exactly the run's failed jobs' tasks
      and the orphans that failed.

    ``lost_submits``: submits whose answer was lost other than by the emulator's drops
    (a process killed between sending a submit and recording its task id)."""
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    Draft202012Validator(load_schema("report.schema.json")).validate(report)
    stats = dict(stats) if stats is not None else server.stats()
    tasks = emulator_tasks(server)
    rjobs = report["jobs"]
    assert len(rjobs) == jobs, f"report lists {len(rjobs)} jobs, the plan has {jobs}"
    statuses = Counter(j["status"] for j in rjobs)
    assert set(statuses) <= {"succeeded", "failed", "unknown"}, dict(statuses)
    totals = report["totals"]
    assert totals["jobs"] == jobs
    assert {k: v for k, v in totals["by_status"].items() if v} == dict(statuses)

    # The files: intact, and exactly what the emulator served.
    checked = verify_run(run_dir)
    assert checked.intact, [p.describe() for p in checked.problems]
    images = sum(len(j["outputs"]) for j in rjobs)
    assert checked.checked == images + 1  # the outputs and the manifest copy
    assert totals["images"] == images
    assert not list(run_dir.rglob("*.seedbatch-part")), "a partial download was left behind"

    assert stats["duplicate_paid"] == 0, stats["duplicates"]
    by_prompt = {(j["provider"], j["prompt"]): j for j in rjobs}
    assert len(by_prompt) == jobs  # every job asks something different
    claimed: set[tuple[str, str]] = set()
    usd = credits = 0.0
    task_errors = 0
    for job in rjobs:
        status, error = job["status"], job["error"]
        if status == "unknown":
            assert job["task_id"] is None, job
            assert error, f"{job['name']}: unknown without a reason"
            continue
        if status == "failed":
            assert error, f"{job['name']}: failed without a reason"
        assert job["task_id"], f"{job['name']} ({status}) has no task id: {error}"
        task = tasks.get((job["provider"], job["task_id"]))
        assert task is not None, f"{job['name']}: task {job['task_id']} unknown to the emulator"
        assert task.prompt == job["prompt"], job["name"]
        claimed.add((job["provider"], job["task_id"]))
        if status == "succeeded":
            assert task.outcome == "succeeded", (job["name"], task.outcome)
            assert len(job["outputs"]) == task.images >= 1
            for out in job["outputs"]:
                served = task.outputs[out["index"]].file
                assert (out["sha256"], out["bytes"]) == (served.sha256, len(served.data))
            usd += task.cost_usd
            credits += task.credits
        else:
            assert task.outcome == "failed", (job["name"], task.outcome, error)
            if task.task_error:  # failed before it ran: its debugerror is the reason
                assert error == f"task failed: {WIRO_TASK_ERROR_TEXT}", error
                task_errors += 1
            else:
                assert error.startswith("task failed: "), error
            assert not job["outputs"]
            assert not job["cost_usd"]
            assert not job["credits"]

    orphans = [t for key, t in tasks.items() if key not in claimed]
    unknown_prompts = Counter()
    for task in orphans:
        job = by_prompt.get((task.provider, task.prompt))
        assert job is not None, f"task {task.id} asks nothing the run asked: {task.prompt!r}"
        assert job["status"] == "unknown", \
            f"{job['name']} ({job['status']}) has a second task {task.id}"
        unknown_prompts[job["name"]] += 1
    assert all(n == 1 for n in unknown_prompts.values()), unknown_prompts  # never resent
    # A submit whose connection dropped is ``unknown`` whether the emulator dropped it
    # before creating the task or after: the client cannot tell the two apart. Each one
    # is exactly one unknown job (a lost answer is never sent again).
    dropped_submits = submit_responses(stats, "dropped")
    assert dropped_submits <= statuses.get("unknown", 0) <= dropped_submits + lost_submits
    answer_lost = {(t.provider, t.id) for t in tasks.values() if t.answer_lost}
    assert stats["tasks_answer_lost"] == len(answer_lost)
    assert answer_lost <= {(t.provider, t.id) for t in orphans}
    assert len(orphans) - len(answer_lost) <= lost_submits
    assert stats["tasks_created_total"] == len(tasks) == len(claimed) + len(orphans)
    failed_orphans = [t for t in orphans if t.outcome == "failed"]
    assert stats["tasks_failed"] == statuses.get("failed", 0) + len(failed_orphans)
    assert stats["tasks_task_error"] == task_errors + sum(t.task_error for t in failed_orphans)

    billed_orphans = sum(1 for t in orphans if t.outcome == "succeeded")
    assert stats["tasks_billed"] == statuses.get("succeeded", 0) + billed_orphans
    assert totals["cost_usd"] == pytest.approx(usd)
    assert totals["credits"] == pytest.approx(credits)
    return Audit(report=report, stats=stats, statuses=statuses, orphans=orphans,
                 jobs_by_name={j["name"]: j for j in rjobs}, task_errors=task_errors)

