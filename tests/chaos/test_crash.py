"""Crash: ``python -m runner run`` in a subprocess, killed with SIGKILL at seeded random
moments, resumed (``python -m runner resume``) and killed again, several times in a row,
then resumed to the end.

The emulator serves from this process (a loopback socket), so it outlives every kill and
its counters see the whole story. After each kill the journal is read as it was left: the
jobs caught in ``submitting`` (the request may have left, no task id was recorded) are the
only ones whose fate is genuinely unknown. At the end every other job is delivered and
verified, none is paid for twice, and exactly the genuinely unknown ones are reported as
``unknown``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chaos_support import ROOT, audit_run, env_for, manifest_text, write_manifest

from runner.emulator import EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 20250301
PER_MODEL = 40  # × 3 aliases = 120 jobs
JOBS = 3 * PER_MODEL
KILLS = 8
LATENCY = 0.5  # the emulator's task duration
CONCURRENCY = 6  # the manifest's, per provider


def _sleeps() -> list[float]:
    rng = random.Random(SEED)
    return [rng.uniform(0.0, 1.5) for _ in range(KILLS)]


# How long each process runs before its SIGKILL, once it has begun: seeded, so fixed.
SLEEPS = _sleeps()


def _query(run_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the journal as another process would (WAL: safe while the run writes)."""
    path = run_dir / "journal.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def _resumes(run_dir: Path) -> int:
    rows = _query(run_dir, "SELECT value FROM meta WHERE key = 'resumes'")
    return int(json.loads(rows[0][0])) if rows else 0


def _wait(predicate: Callable[[], bool], proc: subprocess.Popen[bytes], what: str,
          limit: float = 30.0) -> bool:
    """Wait until ``predicate()``; False when the process ended first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL (no cleanup of any kind); True when it was still running."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return proc.returncode == -signal.SIGKILL


def test_sigkill_at_random_moments_then_resume_pays_once_and_delivers(tmp_path: Path) -> None:
    # At least three kills are forced, not hoped for: a process running t seconds finishes
    # at most CONCURRENCY × (t / LATENCY + 1) Wiro tasks, and each kill leaves at most
    # CONCURRENCY more to finish unattended; with these seeded delays that is fewer than the
    # manifest's Wiro jobs before the third kill, however fast or slow the machine.
    wiro_jobs = 2 * PER_MODEL
    assert CONCURRENCY * (sum(SLEEPS[:3]) / LATENCY + 3) + 2 * CONCURRENCY < wiro_jobs
    cfg = EmulatorConfig(latency=LATENCY, concurrency=8, seed=SEED,
                         options={"pixwith": {"credits": 1_000_000}})
    manifest = write_manifest(tmp_path, manifest_text(PER_MODEL, name="crash",
                                                      concurrency=CONCURRENCY))
    runs = tmp_path / "runs"
    log = tmp_path / "processes.log"
    with serve_in_thread(cfg) as server:
        env = env_for(server)
        proc = _spawn(["run", str(manifest), "--yes", "--runs-dir", str(runs)], env, log)

        def run_dir() -> Path | None:
            found = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
            return found[0] if len(found) == 1 else None

        _wait(lambda: (d := run_dir()) is not None and bool(_query(
            d, "SELECT 1 FROM jobs WHERE state != 'pending' LIMIT 1")), proc, "a first submit")
        rdir = run_dir()
        assert rdir is not None
        genuinely_unknown: set[str] = set()
        kills = resumes = 0
        for round_no in range(KILLS):
            time.sleep(SLEEPS[round_no])
            if not _kill(proc):
                break  # it finished before this moment came
            kills += 1
            # What the journal says right after the kill: a job caught mid-submit may or
            # may not have a task; every other one is certain.
            caught = {name for (name,) in _query(
                rdir, "SELECT name FROM jobs WHERE state = 'submitting'")}
            genuinely_unknown |= caught
            if round_no == KILLS - 1:
                break
            proc = _spawn(["resume", str(rdir)], env, log)
            resumes += 1
            _wait(lambda n=round_no + 1: _resumes(rdir) >= n, proc, "the resume to start")
        assert kills >= 3, log.read_text()

        final = subprocess.run([sys.executable, "-m", "runner", "resume", str(rdir)],
                               env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        expected_exit = 1 if genuinely_unknown else 0
        assert final.returncode == expected_exit, final.stdout + final.stderr
        verify = subprocess.run([sys.executable, "-m", "runner", "verify", str(rdir)],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        time.sleep(cfg.latency + 0.1)  # tasks of lost submits finish (and bill)
        audit = audit_run(rdir, server, JOBS, lost_submits=len(genuinely_unknown))
        stats = audit.stats
        unknown = {j["name"] for j in audit.with_status("unknown")}
        assert unknown == genuinely_unknown
        assert audit.failed == 0
        assert audit.succeeded == JOBS - len(genuinely_unknown)
        assert stats["duplicate_paid"] == 0
        assert stats["tasks_created_total"] <= JOBS
        assert stats["tasks_created_total"] == audit.succeeded + len(audit.orphans)
        assert _resumes(rdir) == resumes + 1
