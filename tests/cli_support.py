"""Helpers for the tests that drive ``seedbatch`` as a process of its own (``python -m
runner``) against emulators on loopback sockets: run or start the command, move the
emulator's clock, wait for a condition (a hang guard, never a speed claim), read what a run
left behind. The suites that use them put ``tests/`` on ``sys.path`` (tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runner.errors import RunDirError
from runner.execute.journal import JobState, Journal


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def set_clock(server: Any, **change: Any) -> None:
    """``POST /__clock`` on a running emulator (``freeze``, ``advance``, …)."""
    httpx.post(f"{server.url}/__clock", json=change, timeout=10).raise_for_status()


def wait_for(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit  # a hang guard, not a speed claim
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def only_run_dir(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()] if runs.is_dir() else []
    return dirs[0] if len(dirs) == 1 else Path("/nonexistent")


def journal_states(run_dir: Path) -> dict[str, JobState]:
    try:
        with Journal.open(run_dir / "journal.sqlite") as journal:
            return {r.name: r.state for r in journal.jobs()}
    except RunDirError:  # not there yet, or being created
        return {}


def report_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
