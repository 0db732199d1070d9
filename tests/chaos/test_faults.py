"""Chaos: a few hundred jobs on both providers through ``runner.run``, against the emulator
on a loopback socket injecting one kind of fault at a high rate (then all at once).

Each test ends with :func:`chaos_support.audit_run`, which holds the run directory
(report.json, the outputs) against the emulator's own records (``/__stats`` and its task
table): every job accounted for, nothing paid twice, every paid task downloaded intact,
every loss reported with its reason. The fault draws are seeded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaos_support import (
    Audit,
    audit_run,
    chaos_options,
    env_for,
    manifest_text,
    write_manifest,
)

from runner import api
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LATENCY = 0.25
EMULATOR_CONCURRENCY = 24  # per account; the manifest allows 32, so code 96 / "too many" hit


@dataclass
class Chaos:
    result: api.RunResult
    audit: Audit
    server: Any
    seconds: float


@contextlib.contextmanager
def chaos_run(tmp_path: Path, faults: str, *, per_model: int, seed: int, retries: int = 20,
              models: tuple[str, ...] = ("v4", "v3", "pix")) -> Iterator[Chaos]:
    """Run the manifest under ``faults``, audit it; the emulator serves until the block ends."""
    jobs = per_model * len(models)
    cfg = EmulatorConfig(latency=LATENCY, concurrency=EMULATOR_CONCURRENCY, seed=seed,
                         faults=FaultSpec.parse(faults), pixwith_credits=1_000_000)
    manifest = write_manifest(tmp_path, manifest_text(per_model, models=models))
    with serve_in_thread(cfg) as server:
        t0 = time.monotonic()
        result = api.run(manifest, runs_dir=tmp_path / "runs", env=env_for(server),
                         options=chaos_options(retries))
        seconds = time.monotonic() - t0
        time.sleep(LATENCY + 0.05)  # tasks whose submit answer was lost finish (and bill)
        audit = audit_run(result.run_dir, server, jobs)
        assert result.succeeded == audit.succeeded
        assert result.failed == audit.failed
        assert result.unknown == audit.unknown
        assert result.exit_code == (0 if audit.succeeded == jobs else 1)
        assert not result.interrupted
        assert not result.fatal
        yield Chaos(result, audit, server, seconds)


PER_MODEL = 80  # × 3 aliases (two Wiro models, Pixwith) = 240 jobs
JOBS = 3 * PER_MODEL


def test_rate_limited_429(tmp_path: Path) -> None:
    # Every 429 pauses its provider's calls for its Retry-After (1 s without one) and halves
    # its in-flight target: the time is set by the number of 429s, so fewer jobs here.
    with chaos_run(tmp_path, "429=0.3", per_model=12, seed=429) as c:
        s = c.audit.stats
        assert s["faults"]["429"] >= 10
        assert s["requests_by_status"]["429"] == s["faults"]["429"]
        assert c.audit.succeeded == 36  # a 429 creates nothing: everything is delivered
        assert s["tasks_created_total"] == s["tasks_billed"] == 36


def test_server_errors_5xx(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "5xx=0.3", per_model=PER_MODEL, seed=500) as c:
        s = c.audit.stats
        assert s["faults"]["5xx"] >= 150
        assert c.audit.succeeded == JOBS  # a 5xx creates nothing: everything is delivered
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS
        # Wiro and Pixwith both met code-96-style limits (the emulator allows 24, the run 32).
        assert s["rejections"]["concurrency"] >= 1


def test_dropped_connections(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "drop=0.2", per_model=PER_MODEL, seed=7) as c:
        a, s = c.audit, c.audit.stats
        assert s["faults"]["drop"] >= 60
        assert s["faults"]["drop_after"] >= 10
        assert a.failed == 0
        assert a.unknown >= 10  # lost submit answers: reported, never sent again
        assert a.succeeded + a.unknown == JOBS
        for job in a.with_status("unknown"):
            assert "answer was lost" in job["error"]
            assert job["attempts"] >= 1
        assert 1 <= len(a.orphans) <= a.unknown
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
    with chaos_run(tmp_path, "slow=0.2,slow_seconds=0.3", per_model=PER_MODEL, seed=11) as c:
        s = c.audit.stats
        assert s["faults"]["slow"] >= 100
        assert c.audit.succeeded == JOBS
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS


def test_failed_tasks(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "fail=0.2", per_model=PER_MODEL, seed=13) as c:
        a, s = c.audit, c.audit.stats
        assert a.failed == s["tasks_failed"] == s["faults"]["fail"] >= 20
        assert a.succeeded + a.failed == JOBS
        assert s["tasks_billed"] == a.succeeded  # a failed task is not billed, nor counted spent
        assert c.result.exit_code == 1
        for job in a.with_status("failed"):
            assert job["error"].startswith("task failed")


def test_truncated_downloads(tmp_path: Path) -> None:
    with chaos_run(tmp_path, "truncate=0.3", per_model=PER_MODEL, seed=17) as c:
        s = c.audit.stats
        assert s["faults"]["truncate"] >= 50
        assert c.audit.succeeded == JOBS
        assert s["tasks_created_total"] == s["tasks_billed"] == JOBS
        # Each cut-short download was fetched again; every other download was kept.
        assert s["downloads"] == c.result.images + s["faults"]["truncate"]


EVERYTHING = "429=0.05,5xx=0.3,drop=0.2,slow=0.2,fail=0.2,truncate=0.3,slow_seconds=0.3"


def test_every_fault_at_once(tmp_path: Path) -> None:
    # 429s kept rarer than the rest: each one pauses a provider's calls for a second or two.
    with chaos_run(tmp_path, EVERYTHING, per_model=30, seed=2024, retries=30) as c:
        a, s = c.audit, c.audit.stats
        assert all(s["faults"][kind] >= 1 for kind in
                   ("429", "5xx", "drop", "drop_after", "slow", "fail", "truncate")), s["faults"]
        assert a.succeeded + a.failed + a.unknown == 90
        assert a.succeeded >= 30
        assert a.failed <= s["faults"]["fail"]
        assert s["tasks_created_total"] == a.succeeded + a.failed + len(a.orphans)
