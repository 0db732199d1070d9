"""Chaos: a few hundred jobs on both providers through ``runner.run``, against the emulator
on a loopback socket injecting one kind of fault at a high rate (then all at once).

Each test ends with :func:`chaos_support.audit_run`, which holds the run directory
(report.json, the outputs) against the emulator's own records (``/__stats`` and its task
table): every job accounted for, nothing paid twice, every paid task downloaded intact,
every loss reported with its reason.

No assertion here depends on timing. Which request meets which fault depends on how the
client's requests interleave, but the emulator draws the n-th decision of each stream from
the seed and n alone (runner/emulator/faults.py). So the faults a run met are checked
*exactly* against ``expected_faults(spec, seed, decisions made)``, and that a fault did
occur is checked only through a floor: the counts for a number of decisions the run cannot
stay below (every job submits at least once, …), a fact of the seed computed before
anything runs. Everything else is a count that cannot miss: faults == answers with that
status, dropped submits == unknown jobs, submit attempts == submits answered, ….
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaos_support import (
    Audit,
    HeldClock,
    audit_run,
    chaos_options,
    env_for,
    manifest_text,
    submit_responses,
    write_manifest,
)

from runner import api
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread
from runner.emulator.faults import FaultInjector, expected_faults
from runner.emulator.wiro import TASK_ERROR_TEXT as WIRO_TASK_ERROR_TEXT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LATENCY = 0.25
EMULATOR_CONCURRENCY = 24  # per account; the manifest allows 32, so code 96 may be met too


@dataclass
class Chaos:
    result: api.RunResult
    audit: Audit
    server: Any
    floor: Counter[str]  # the faults this seed guarantees for the least work any run does


def floor_of(faults: str, seed: int, **least: int) -> Counter[str]:
    """The faults ``seed`` gives the first ``least[stream]`` decisions of each stream
    (``task_wiro`` for ``task/wiro``): what the run must meet at least."""
    return expected_faults(faults, seed, {k.replace("_", "/"): n for k, n in least.items()})


@contextlib.contextmanager
def chaos_run(tmp_path: Path, faults: str, *, per_model: int, seed: int, retries: int = 20,
              models: tuple[str, ...] = ("v4", "v3", "pix"),
              least: dict[str, int] | None = None) -> Iterator[Chaos]:
    """Run the manifest under ``faults``, audit it; the emulator serves until the block ends.

    ``least``: decisions per stream that any run of this manifest makes at least (checked);
    the faults the seed gives them are ``Chaos.floor``."""
    jobs = per_model * len(models)
    least = least or {}
    cfg = EmulatorConfig(latency=LATENCY, concurrency=EMULATOR_CONCURRENCY, seed=seed,
                         faults=FaultSpec.parse(faults),
                         options={"pixwith": {"credits": 1_000_000}})
    manifest = write_manifest(tmp_path, manifest_text(per_model, models=models))
    with serve_in_thread(cfg) as server:
        result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(server),
                         options=chaos_options(retries))
        # tasks whose submit answer was lost finish (and bill): the emulator's clock is real
        # time, and these were created before the run ended
        time.sleep(LATENCY + 0.05)
        audit = audit_run(result.run_dir, server, jobs)
        s = audit.stats
        assert result.succeeded == audit.succeeded
        assert result.failed == audit.failed
        assert result.unknown == audit.unknown
        assert result.exit_code == (0 if audit.succeeded == jobs else 1)
        assert not result.interrupted
        assert not result.fatal
        # The faults met are exactly what the seed gives the decisions made …
        decisions = s["fault_decisions"]
        assert s["faults"] == dict(expected_faults(faults, seed, decisions))
        # … every task given a fault ended failed (all have ended: see the sleep above) …
        assert s["tasks_failed"] == s["faults"]["fail"] + s["faults"]["task_error"]
        assert s["tasks_task_error"] == s["faults"]["task_error"]
        # … and every request given one was answered as such.
        assert s["requests_by_status"].get("429", 0) == s["faults"]["429"]
        assert sum(s["requests_by_status"].get(c, 0) for c in ("500", "502", "503")) == \
            s["faults"]["5xx"]
        assert s["requests_by_status"].get("dropped", 0) == s["faults"]["drop"]
        # Every submit the journal counts reached the emulator once, and no other did.
        assert sum(j["attempts"] for j in audit.report["jobs"]) == submit_responses(s)
        assert s["fault_decisions"]["task/wiro"] == sum(s["tasks_created"].get(
            "wiro", {}).values())
        for stream, n in least.items():
            assert decisions[stream.replace("_", "/")] >= n, (stream, decisions)
        yield Chaos(result, audit, server, floor_of(faults, seed, **least))


PER_MODEL = 80  # × 3 aliases (two Wiro models, Pixwith) = 240 jobs
JOBS = 3 * PER_MODEL
WIRO_JOBS = 2 * PER_MODEL


def test_rate_limited_429(tmp_path: Path) -> None:
    # Every 429 pauses its provider's calls for its Retry-After (1 s without one) and halves
    # its in-flight target: the time is set by the number of 429s, so fewer jobs here.
    # A 429 creates nothing, so every job is delivered: a submit and a poll each at least.
    with chaos_run(tmp_path, "429=0.3", per_model=12, seed=429, least={"api": 2 * 36}) as c:
        s = c.audit.stats
        assert c.floor["429"] >= 10  # a fact of the seed
        assert s["faults"]["429"] >= c.floor["429"]
        assert c.audit.succeeded == 36
        assert s["tasks_created_total"] == s["tasks_billed"] == 36


def test_server_errors_5xx(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "5xx=0.3", per_model=PER_MODEL, seed=500,
                   least={"api": 2 * JOBS, "download": JOBS}) as c:
        s = c.audit.stats
        assert c.floor["5xx"] >= 150
        assert s["faults"]["5xx"] >= c.floor["5xx"]
        assert c.audit.succeeded == JOBS  # a 5xx creates nothing: everything is delivered
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS
        # Whether the emulator's limit of 24 was met depends on timing: only consistency
        # here (test_concurrency_limits_are_waited_out forces it). Each refused submit was
        # one more attempt of its job, and never a task.
        assert s["rejections"].get("concurrency", 0) == sum(s["concurrency_refusals"].values())
        assert s["inflight_tasks_peak"]["wiro"] <= EMULATOR_CONCURRENCY
        assert submit_responses(s) == JOBS + s["rejections"].get("concurrency", 0) + \
            submit_responses(s, "500") + submit_responses(s, "502") + \
            submit_responses(s, "503")


DROP_SEED = 19  # the run's first API decision is a drop after the task was created


def test_dropped_connections(tmp_path: Path) -> None:
    # Forced: a run's first API call is a submit (nothing is polled before a task exists),
    # and with this seed the first decision drops the answer after creating the task. So
    # at least one job is unknown with an orphaned task, whatever the timing.
    first = FaultInjector(FaultSpec.parse("drop=0.2"), DROP_SEED).for_api()
    assert (first.error, first.drop_after) == ("drop", True)
    with chaos_run(tmp_path, "drop=0.2", per_model=PER_MODEL, seed=DROP_SEED,
                   least={"api": JOBS}) as c:
        a, s = c.audit, c.audit.stats
        assert c.floor["drop"] >= 40
        assert c.floor["drop_after"] >= 10
        assert a.failed == 0
        assert a.unknown == submit_responses(s, "dropped") >= 1  # lost answers: never resent
        assert a.succeeded + a.unknown == JOBS
        for job in a.with_status("unknown"):
            assert "answer was lost" in job["error"]
            assert job["attempts"] >= 1
        assert len(a.orphans) == s["tasks_answer_lost"] >= 1
        assert len(a.orphans) <= a.unknown
        assert s["tasks_created_total"] == a.succeeded + len(a.orphans)
        assert any("--retry-unknown" in m for m in c.result.messages)
        # A plain resume leaves the unknown jobs alone: nothing is submitted.
        env = env_for(c.server)
        c.server.set_faults("none")
        same = api.resume(c.result.run_dir, env=env, options=chaos_options(20))
        assert same.unknown == a.unknown
        assert c.server.stats()["tasks_created_total"] == s["tasks_created_total"]
        # The user accepts the risk: exactly the lost-but-created tasks are paid twice.
        again = api.resume(c.result.run_dir, env=env, options=chaos_options(20),
                           retry_unknown=True)
        assert again.succeeded == JOBS
        assert again.exit_code == 0
        after = c.server.stats()
        assert after["tasks_created_total"] == s["tasks_created_total"] + a.unknown
        billed_orphans = sum(1 for t in a.orphans if t.outcome == "succeeded")
        assert after["duplicate_paid"] == billed_orphans


def test_slow_answers(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "slow=0.2,slow_seconds=0.3", per_model=PER_MODEL, seed=11,
                   least={"api": 2 * JOBS, "download": JOBS}) as c:
        s = c.audit.stats
        assert c.floor["slow"] >= 100
        assert s["faults"]["slow"] >= c.floor["slow"]
        assert c.audit.succeeded == JOBS
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS


def test_failed_tasks(tmp_path: Path) -> None:
    # No request fails, so each job creates exactly one task: the task streams' decisions
    # are known in advance, and so is the number of failures.
    with chaos_run(tmp_path, "fail=0.2", per_model=PER_MODEL, seed=13,
                   least={"task_wiro": WIRO_JOBS, "task_pixwith": PER_MODEL}) as c:
        a, s = c.audit, c.audit.stats
        assert s["fault_decisions"]["task/wiro"] == WIRO_JOBS
        assert s["fault_decisions"]["task/pixwith"] == PER_MODEL
        assert a.failed == s["tasks_failed"] == s["faults"]["fail"] == c.floor["fail"] >= 20
        assert a.succeeded + a.failed == JOBS
        assert s["tasks_billed"] == a.succeeded  # a failed task is not billed, nor counted spent
        assert c.result.exit_code == 1
        for job in a.with_status("failed"):
            assert job["error"].startswith("task failed")


def test_task_error_before_the_model_runs(tmp_path: Path) -> None:
    # Wiro's Task/Detail status task_error is terminal: each such job fails at the first poll
    # that sees it, with the task's debugerror, at no cost. Pixwith has no such state.
    with chaos_run(tmp_path, "task_error=0.2", per_model=PER_MODEL, seed=19,
                   least={"task_wiro": WIRO_JOBS, "task_pixwith": PER_MODEL}) as c:
        a, s = c.audit, c.audit.stats
        assert s["fault_decisions"]["task/wiro"] == WIRO_JOBS
        assert a.failed == a.task_errors == s["tasks_task_error"] == s["faults"]["task_error"]
        assert a.task_errors == c.floor["task_error"] >= 20
        assert a.succeeded + a.failed == JOBS
        assert s["tasks_billed"] == a.succeeded
        assert c.result.exit_code == 1
        tasks = c.server.app.state.emulator.tasks
        for job in a.with_status("failed"):
            assert job["provider"] == "wiro"
            assert job["error"] == f"task failed: {WIRO_TASK_ERROR_TEXT}"
            assert not job["cost_usd"]
            task = tasks[("wiro", job["task_id"])]
            # ended by the first answer that showed task_error, never polled after it
            assert task.task_error
            assert task.polls_after_end == 1
            assert job["polls"] == task.polls
        assert all(j["status"] == "succeeded" for j in a.report["jobs"] if j["alias"] == "pix")


def test_truncated_downloads(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "truncate=0.3", per_model=PER_MODEL, seed=17,
                   least={"download": JOBS}) as c:
        s = c.audit.stats
        assert c.floor["truncate"] >= 50
        assert s["faults"]["truncate"] >= c.floor["truncate"]
        assert c.audit.succeeded == JOBS
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS
        # Each cut-short download was fetched again; every other download was kept.
        assert s["downloads"] == c.result.images + s["faults"]["truncate"]


def test_concurrency_limits_are_waited_out(tmp_path: Path) -> None:
    # Forced: the emulator's clock stands still until both accounts have refused a submit
    # for having 2 tasks unfinished, so the client (allowed 8) must meet code 96 and
    # Pixwith's "too many tasks" before any task can end.
    def both_refused(state: Any) -> bool:
        refused = state.stats.concurrency_refusals
        return refused["wiro"] >= 1 and refused["pixwith"] >= 1

    clock = HeldClock(both_refused)
    cfg = EmulatorConfig(latency=LATENCY, concurrency=2, seed=1,
                         options={"pixwith": {"credits": 1_000_000}})
    manifest = write_manifest(tmp_path, manifest_text(8, models=("v4", "pix"), concurrency=8))
    with serve_in_thread(cfg, clock=clock) as server:
        clock.state = server.app.state.emulator
        result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(server),
                         options=chaos_options(20))
        audit = audit_run(result.run_dir, server, 16)
    s = audit.stats
    assert clock.released_by_condition, s["concurrency_refusals"]
    assert s["concurrency_refusals"]["wiro"] >= 1
    assert s["concurrency_refusals"]["pixwith"] >= 1
    assert result.exit_code == 0
    assert audit.succeeded == 16  # waited out, never a failure …
    assert s["tasks_created_total"] == s["tasks_billed"] == 16  # … nor an extra task
    assert s["inflight_tasks_peak"] == {"wiro": 2, "pixwith": 2}
    for provider, alias in (("wiro", "v4"), ("pixwith", "pix")):
        attempts = sum(j["attempts"] for j in audit.report["jobs"] if j["alias"] == alias)
        assert attempts == 8 + s["concurrency_refusals"][provider]  # each refusal: one retry


EVERYTHING = ("429=0.05,5xx=0.3,drop=0.2,slow=0.2,task_error=0.1,fail=0.2,truncate=0.3,"
              "slow_seconds=0.3")


def test_every_fault_at_once(tmp_path: Path) -> None:
    # 429s kept rarer than the rest: each one pauses a provider's calls for a second or two.
    # Every job submits at least once: the API faults are guaranteed by the seed's floor.
    # How many tasks and downloads there are depends on which requests the faults hit, so
    # task_error, fail and truncate are checked for consistency here (exact counts), and
    # for occurrence in their own tests.
    with chaos_run(tmp_path, EVERYTHING, per_model=30, seed=2024, retries=30,
                   least={"api": 90}) as c:
        a, s = c.audit, c.audit.stats
        assert all(c.floor[kind] >= 1 for kind in ("429", "5xx", "drop", "drop_after",
                                                   "slow")), c.floor
        assert all(s["faults"][kind] >= c.floor[kind] for kind in c.floor)
        assert a.succeeded + a.failed + a.unknown == 90
        assert a.unknown == submit_responses(s, "dropped")
        # every failed job is a task that failed, before it ran (task_error) or after
        tasks = c.server.app.state.emulator.tasks
        fates = Counter("task_error" if tasks[(j["provider"], j["task_id"])].task_error
                        else "fail" for j in a.with_status("failed"))
        assert fates["task_error"] == a.task_errors
        assert fates["task_error"] + sum(t.task_error for t in a.orphans) == \
            s["faults"]["task_error"]
        assert s["tasks_created_total"] == a.succeeded + a.failed + len(a.orphans)
