"""Wiro's websocket end to end, over a real loopback socket: completion pushed, progress
shown, and polling taking over where the push fails (refused, dropped, silent, a task ended
before it was subscribed), with a kill -9 and a resume in the middle.

Nothing here depends on timing: the emulator's clock is frozen while tasks must stay
unfinished (``POST /__clock``), socket faults are forced (rate 1), and the counts asserted
(Task/Detail requests, status requests about ended tasks) cannot come out otherwise.
Time limits are hang guards only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import api
from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread
from runner.execute.executor import ExecutorOptions
from runner.execute.journal import Journal
from runner.execute.policy import PollSettings
from runner.execute.progress import NullProgress

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DETAIL = "POST /wiro/v1/Task/Detail"
JOBS = 6
GUARD = 120.0  # seconds: a hang guard, never a condition


def manifest(folder: Path, jobs: int = JOBS, concurrency: int = 8) -> Path:
    path = folder / "socket.yaml"
    path.write_text(f"""version: 1
name: socket
limits:
  wiro: {{concurrency: {concurrency}}}
jobs:
  - name: "tile-{{{{ i }}}}"
    model: wiro/seedream-v4
    prompt: "a tile, number {{{{ i }}}}"
    matrix:
      i: {list(range(jobs))}
""", encoding="utf-8")
    return path


def env_for(server: Any, *, socket: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WIRO_", "PIXWITH_", "SEEDBATCH_REALTIME"))}
    env.update(demo_credentials())
    env["WIRO_BASE_URL"] = server.wiro_base_url
    if socket:
        env["WIRO_SOCKET_URL"] = server.wiro_push_url
    env.update(extra)
    return env


def options(patience: float) -> ExecutorOptions:
    return ExecutorOptions(poll=PollSettings(push_patience=patience), retry_wait_initial=0.05,
                           retry_wait_max=0.5)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    cfg = getattr(request, "param", None) or EmulatorConfig(latency=0.5)
    with serve_in_thread(cfg) as server:
        yield server


def clock(server: Any, **doc: Any) -> None:
    httpx.post(f"{server.url}/__clock", json=doc, timeout=10).raise_for_status()


def wait_for(what: str, cond: Callable[[], bool], thread: threading.Thread | None = None,
             proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + GUARD
    while not cond():
        assert time.monotonic() < deadline, f"hang guard: {what}"
        assert thread is None or thread.is_alive(), f"the run ended before {what}"
        assert proc is None or proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.05)


class Recorder(NullProgress):
    """A progress sink that keeps what each task's pushed progress was."""

    def __init__(self) -> None:
        self.percents: dict[str, list[float]] = {}
        self.left: list[str] = []

    def task_progress(self, name: str, percent: float | None) -> None:
        if percent is None:
            self.left.append(name)
        else:
            self.percents.setdefault(name, []).append(percent)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # re-raised by the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def result_of(thread: threading.Thread, box: list[Any]) -> Any:
    thread.join(GUARD)
    assert not thread.is_alive(), "hang guard: the run did not end"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def test_every_task_completed_by_push_one_detail_each_progress_shown(
        tmp_path: Path, emulator: Any) -> None:
    clock(emulator, freeze=True)  # nothing finishes until every task is subscribed
    progress = Recorder()
    thread, box = in_thread(lambda: api.run(
        manifest(tmp_path), runs_dir=tmp_path / "runs", env=env_for(emulator),
        progress=progress, handle_signals=False, options=options(patience=3600)))
    wait_for("every task subscribed",
             lambda: emulator.stats()["push"]["subscriptions"] == JOBS, thread)
    assert emulator.stats()["requests_by_endpoint"].get(DETAIL, 0) == 0  # waiting: no poll
    clock(emulator, advance=5)
    result = result_of(thread, box)
    stats = emulator.stats()
    assert result.succeeded == JOBS
    assert result.exit_code == 0
    # the push ended every wait (nothing is polled before the silence: an hour here), then
    # exactly one Task/Detail per task read pexit, totalcost and the outputs
    assert stats["requests_by_endpoint"][DETAIL] == JOBS
    assert stats["polls_after_end"] == JOBS
    assert stats["push"]["connections"] == 1  # many tasks on one socket
    assert stats["push"]["frames"] > 0
    assert stats["duplicate_paid"] == 0
    assert result.spent_usd == pytest.approx(stats["billed_usd"])
    # progress: the model's run at a third, two thirds and done, for every task
    assert sorted(progress.percents) == sorted(f"tile-{i}" for i in range(JOBS))
    for seen in progress.percents.values():
        assert [round(p) for p in seen] == [33, 67, 100]
    assert sorted(progress.left) == sorted(progress.percents)


@pytest.mark.parametrize(("fault", "counter"), [("socket_refuse=1", "refused"),
                                                ("socket_drop=1", "dropped"),
                                                ("socket_silent=1", "silent")])
def test_a_failing_socket_falls_back_to_polling_nothing_lost_nothing_fetched_twice(
        tmp_path: Path, emulator: Any, fault: str, counter: str) -> None:
    emulator.set_faults(fault)
    result = api.run(manifest(tmp_path), runs_dir=tmp_path / "runs", env=env_for(emulator),
                     handle_signals=False, options=options(patience=0.2))
    stats = emulator.stats()
    assert result.succeeded == JOBS
    assert result.exit_code == 0
    assert stats["push"][counter] >= 1
    assert stats["faults"][fault.split("=")[0]] >= 1
    assert stats["tasks_created_total"] == JOBS
    assert stats["duplicate_paid"] == 0
    assert stats["polls_after_end"] == JOBS  # each ended task read once, by a poll
    assert stats["paid_outputs_unfetched"] == 0
    if counter != "dropped":
        assert stats["push"]["frames"] == 0
    if counter == "silent":
        # The socket stays open and says nothing: one task probes (polls at 0.2 s and
        # 0.45 s after its submit find a 0.5 s task unfinished, at most); the others wait for
        # its lesson and are each polled once, after they end.
        assert stats["requests_by_endpoint"][DETAIL] <= JOBS + 2


@pytest.mark.parametrize("emulator", [EmulatorConfig(latency=0.0)], indirect=True)
def test_tasks_ended_before_their_subscription_are_polled(tmp_path: Path,
                                                          emulator: Any) -> None:
    result = api.run(manifest(tmp_path), runs_dir=tmp_path / "runs", env=env_for(emulator),
                     handle_signals=False, options=options(patience=0.2))
    stats = emulator.stats()
    assert result.succeeded == JOBS
    assert stats["push"]["subscriptions"] == JOBS
    assert stats["push"]["frames"] == 0  # no replay of what happened before
    assert stats["requests_by_endpoint"][DETAIL] == stats["polls_after_end"] == JOBS


def test_realtime_off_polls_and_opens_no_socket(tmp_path: Path, emulator: Any) -> None:
    text = manifest(tmp_path).read_text().replace(
        "limits:", "providers:\n  wiro: {realtime: false}\nlimits:")
    (tmp_path / "off.yaml").write_text(text)
    result = api.run(tmp_path / "off.yaml", runs_dir=tmp_path / "runs", env=env_for(emulator),
                     handle_signals=False, options=options(patience=3600))
    assert result.succeeded == JOBS
    by_env = api.run(manifest(tmp_path), runs_dir=tmp_path / "runs2",
                     env=env_for(emulator, SEEDBATCH_REALTIME="0"), handle_signals=False,
                     options=options(patience=3600))
    assert by_env.succeeded == JOBS
    stats = emulator.stats()
    assert stats["push"]["connections"] == stats["push"]["subscriptions"] == 0
    assert stats["polls_after_end"] == 2 * JOBS


def test_kill_9_then_resume_with_the_socket_on(tmp_path: Path, emulator: Any) -> None:
    clock(emulator, freeze=True)  # every task stays unfinished until the resume follows it
    env = env_for(emulator)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "run", str(manifest(tmp_path)),
                             "--runs-dir", str(tmp_path / "runs"), "--yes", "--quiet"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("every task subscribed by the first run",
                 lambda: emulator.stats()["push"]["subscriptions"] == JOBS, proc=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        log.close()
    (run_dir,) = (tmp_path / "runs").iterdir()
    with Journal.open(run_dir / "journal.sqlite") as journal:
        assert sum(1 for rec in journal.jobs() if rec.task_id) == JOBS
    before = emulator.stats()
    thread, box = in_thread(lambda: api.resume(run_dir, env=env, handle_signals=False,
                                               options=options(patience=3600)))
    # the resume polls each task once (still running: the clock stands still), which
    # subscribes it again with the token Task/Detail lists; then it waits for the push
    wait_for("every task subscribed again",
             lambda: emulator.stats()["push"]["subscriptions"] == 2 * JOBS, thread)
    clock(emulator, advance=5)
    result = result_of(thread, box)
    stats = emulator.stats()
    assert result.succeeded == JOBS
    assert result.exit_code == 0
    assert stats["tasks_created_total"] == JOBS
    assert stats["duplicate_paid"] == 0
    assert stats["polls_after_end"] == JOBS  # each ended task read once
    resumed_polls = stats["requests_by_endpoint"][DETAIL] - \
        before["requests_by_endpoint"].get(DETAIL, 0)
    assert resumed_polls == 2 * JOBS  # one to re-subscribe, one after the push
    assert stats["push"]["frames"] > 0
    assert stats["paid_outputs_unfetched"] == 0


def test_the_emulators_index_names_the_socket(emulator: Any) -> None:
    index = httpx.get(f"{emulator.url}/__", timeout=10).json()
    assert index["wiro_push_url"] == emulator.wiro_push_url
    assert index["wiro_push_url"].startswith("ws://127.0.0.1:")
    assert index["wiro_push_url"].endswith("/wiro/socket/v1")


def test_fault_spec_names_the_socket_faults() -> None:
    spec = FaultSpec.parse("socket_refuse=0.5,socket_drop=0.25,socket_silent=1")
    assert (spec.socket_refuse, spec.socket_drop, spec.socket_silent) == (0.5, 0.25, 1.0)
    assert str(spec) == "socket_refuse=0.5,socket_drop=0.25,socket_silent=1"
