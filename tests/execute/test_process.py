"""A real `python -m runner run` in a subprocess, against an emulator in this process:
kill -9 and resume, Ctrl-C once and twice, `cancel` from another process, the lock."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from execute_support import (
    E2E,
    ROOT,
    env_for,
    journal_rows,
    only_run_dir,
    simple_manifest,
    spawn,
    wait_for,
    write,
)

from runner import api
from runner.cli import main
from runner.emulator import EmulatorConfig, serve_in_thread
from runner.errors import RunDirError
from runner.execute.journal import JobState, Journal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[object]:
    cfg = getattr(request, "param", None) or EmulatorConfig(latency=1.5)
    with serve_in_thread(cfg) as server:
        yield server


def _wave_submitted(runs: Path, n: int) -> bool:
    """Exactly ``n`` jobs have a task id and none is mid-submit."""
    run_dir = only_run_dir(runs)
    if run_dir is None:
        return False
    rows = journal_rows(run_dir)
    return sum(1 for r in rows if r[2]) == n and not any(r[1] == "submitting" for r in rows)


def _start(tmp_path: Path, emulator: object, jobs: int, concurrency: int,
           ) -> tuple[object, Path]:
    manifest = write(tmp_path, "m.yaml", simple_manifest(jobs, concurrency=concurrency))
    runs = tmp_path / "runs"
    proc = spawn(["run", str(manifest), "--yes", "--runs-dir", str(runs)],
                 env_for(emulator), ROOT)
    try:
        wait_for(lambda: _wave_submitted(runs, concurrency), 30, "the first wave of submits")
    except AssertionError:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"no first wave; stderr:\n{err}") from None
    run_dir = only_run_dir(runs)
    assert run_dir is not None
    return proc, run_dir


def test_kill_9_then_resume_submits_nothing_twice(tmp_path: Path, emulator: object) -> None:
    proc, run_dir = _start(tmp_path, emulator, jobs=7, concurrency=3)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert emulator.stats()["tasks_created_total"] == 3  # type: ignore[attr-defined]
    before = {name: task for name, _, task in journal_rows(run_dir) if task}
    result = api.resume(run_dir, env=env_for(emulator), options=E2E)
    assert result.exit_code == 0
    assert result.succeeded == 7
    stats = emulator.stats()  # type: ignore[attr-defined]
    assert stats["tasks_created_total"] == 7  # one task per job, the killed ones re-attached
    assert stats["duplicate_paid"] == 0
    with Journal.open(run_dir / "journal.sqlite") as journal:
        for rec in journal.jobs():
            assert rec.attempts == 1
            if rec.name in before:
                assert rec.task_id == before[rec.name]
        assert journal.meta()["resumes"] == 1


def test_first_ctrl_c_lets_in_flight_finish_and_submits_nothing_new(
        tmp_path: Path, emulator: object) -> None:
    proc, run_dir = _start(tmp_path, emulator, jobs=5, concurrency=2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Interrupted: no new jobs will be submitted" in err
    assert "seedbatch resume" in out
    states = [state for _, state, _ in journal_rows(run_dir)]
    assert states.count("succeeded") == 2
    assert states.count("pending") == 3
    stats = emulator.stats()  # type: ignore[attr-defined]
    assert stats["tasks_created_total"] == 2
    assert stats["tasks_succeeded"] == 2


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=30)], indirect=True)
def test_second_ctrl_c_cancels_remote_tasks_and_exits_130(tmp_path: Path,
                                                          emulator: object) -> None:
    proc, run_dir = _start(tmp_path, emulator, jobs=5, concurrency=2)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: any(e for e in _events(run_dir, "interrupt")), 10, "the first interrupt")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    states = [state for _, state, _ in journal_rows(run_dir)]
    assert states.count("cancelled") == 2
    assert states.count("pending") == 3
    assert emulator.stats()["tasks_cancelled"] == 2  # type: ignore[attr-defined]


def _events(run_dir: Path, kind: str) -> list[object]:
    with Journal.open(run_dir / "journal.sqlite") as journal:
        return list(journal.events(kind=kind))


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=30)], indirect=True)
def test_cancel_from_another_shell_stops_the_running_process(tmp_path: Path,
                                                             emulator: object) -> None:
    proc, run_dir = _start(tmp_path, emulator, jobs=4, concurrency=2)
    # The run is locked to its process …
    with pytest.raises(RunDirError, match=f"process {proc.pid}"):  # type: ignore[attr-defined]
        api.resume(run_dir, env=env_for(emulator))
    assert api.status(run_dir).running_pid == proc.pid  # type: ignore[attr-defined]
    # … and `seedbatch cancel` asks it to stop.
    res = CliRunner().invoke(main, ["cancel", str(run_dir), "--wait", "20"],
                             env=env_for(emulator))
    assert res.exit_code == 0, res.output
    assert f"asked process {proc.pid} to cancel" in res.output  # type: ignore[attr-defined]
    proc.communicate(timeout=10)  # type: ignore[attr-defined]
    assert proc.returncode == 130  # type: ignore[attr-defined]
    assert emulator.stats()["tasks_cancelled"] == 2  # type: ignore[attr-defined]
    assert api.status(run_dir).running_pid is None


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=30)], indirect=True)
def test_cancel_with_no_process_cancels_the_journal_s_tasks(tmp_path: Path,
                                                            emulator: object) -> None:
    proc, run_dir = _start(tmp_path, emulator, jobs=4, concurrency=2)
    proc.kill()  # type: ignore[attr-defined]
    proc.communicate(timeout=10)  # type: ignore[attr-defined]
    res = api.cancel(run_dir, env=env_for(emulator))
    assert res.signalled_pid is None
    assert res.cancelled == 2
    assert emulator.stats()["tasks_cancelled"] == 2  # type: ignore[attr-defined]
    with Journal.open(run_dir / "journal.sqlite") as journal:
        assert len(journal.jobs(JobState.CANCELLED)) == 2
        assert len(journal.jobs(JobState.PENDING)) == 2
