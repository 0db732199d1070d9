"""Task/Detail's ``status: "task_error"`` is terminal: the task failed before its model ran.

PROVIDERS.md ("task_error means two different things"): a websocket event named task_error
is interim stderr, but the *status* task_error in a Task/Detail answer is a fatal
pre-execution state (Wiro's MCP server documentation, get_task; the official client
WiroClient lists it among its terminal statuses). The answers below are the vendor's own
Task/Detail example (the seedream-v4 page) with the fields a task_error task carries in the
official client's tests: ``status: "task_error"``, ``pexit: ""``, a ``debugerror``, no
outputs, ``totalcost: "0"``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from runner.emulator import EmulatorConfig, create_app
from runner.emulator.wiro import TASK_ERROR_TEXT as WIRO_TASK_ERROR_TEXT
from runner.providers.base import TaskState
from runner.providers.pixwith import PixwithProvider
from runner.providers.wiro import WiroProvider, parse_task, parse_task_detail, wiro_statuses

from .conftest import (
    PIXWITH_KEY,
    WIRO_KEY,
    WIRO_SECRET,
    json_response,
    make_job,
    vendor_json,
    wiro_client,
)

REASON = "Output folder creation failed"


def task_error_detail(**fields: Any) -> dict[str, Any]:
    """The vendor's Task/Detail example turned into a task that failed before it ran."""
    doc = vendor_json("wiro_v4_task_detail.txt")
    task = doc["tasklist"][0]
    task.update({"status": "task_error", "pexit": "", "debugerror": REASON, "outputs": [],
                 "totalcost": "0", "cps": "0", "starttime": "0", "endtime": "0",
                 "postprocessstarttime": "0", "postprocessendtime": "0", "size": "0",
                 "elapsedseconds": "1.0000"})
    for name, value in fields.items():
        if value is None:
            task.pop(name, None)
        else:
            task[name] = value
    return doc


def test_task_error_from_task_detail_is_a_terminal_failure_with_its_debugerror() -> None:
    status = parse_task_detail(task_error_detail(), "534574")
    assert status.state is TaskState.FAILED
    assert status.state.terminal
    assert status.error == REASON
    assert status.provider_status == "task_error"
    assert status.outputs == ()
    assert status.cost_usd == 0.0  # reported "0": never billed
    assert status.task_id == "534574"
    assert "task_error" in wiro_statuses()


def test_task_error_cost_only_when_totalcost_is_reported() -> None:
    absent = parse_task_detail(task_error_detail(totalcost=None), "534574")
    assert absent.state is TaskState.FAILED
    assert absent.cost_usd is None  # nothing said: the executor counts $0
    charged = parse_task_detail(task_error_detail(totalcost="0.001500000000"), "534574")
    assert charged.cost_usd == pytest.approx(0.0015)  # whatever Wiro reports is passed on


@pytest.mark.parametrize(("fields", "reason"), [
    ({"debugerror": "", "error": "worker image missing"}, "worker image missing"),
    ({"debugerror": None, "message": "no output folder"}, "no output folder"),
    ({"debugerror": "  \n"}, "status task_error before its model ran"),
])
def test_task_error_reason_falls_back_to_other_error_text(fields: dict[str, Any],
                                                          reason: str) -> None:
    status = parse_task_detail(task_error_detail(**fields), "534574")
    assert status.state is TaskState.FAILED
    assert status.error is not None
    assert reason in status.error


def test_task_error_is_never_a_success_even_with_exit_zero_and_outputs() -> None:
    # contradictory, but the status decides, as in WiroClient's getTaskState
    got = parse_task({"id": "7", "status": "task_error", "pexit": "0", "debugerror": REASON,
                      "outputs": [{"name": "0.png", "url": "https://cdn/0.png"}]})
    assert got.state is TaskState.FAILED
    assert got.error == REASON


def test_task_error_full_is_still_running_whatever_its_fields_say() -> None:
    # the accumulated stderr of a run that goes on to task_end and post-processing
    got = parse_task({"id": "7", "status": "task_error_full", "pexit": "1",
                      "debugerror": "RuntimeError: boom", "outputs": []})
    assert got.state is TaskState.RUNNING
    assert got.error is None


@pytest.mark.anyio
async def test_poll_ends_at_the_first_task_error_answer() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return json_response(task_error_detail())

    async with wiro_client(handler) as client:
        status = await client.poll("534574")
    assert len(sent) == 1
    assert json.loads(sent[0].content) == {"taskid": "534574"}
    assert (status.state, status.error, status.cost_usd) == (TaskState.FAILED, REASON, 0.0)


# -- the same, against the emulator ------------------------------------------------------------

@asynccontextmanager
async def emulated(clock: list[float], **kw: Any) -> AsyncIterator[tuple[WiroProvider,
                                                                          PixwithProvider,
                                                                          Any]]:
    cfg = EmulatorConfig(credentials={"WIRO_API_KEY": WIRO_KEY, "WIRO_API_SECRET": WIRO_SECRET,
                                      "PIXWITH_API_KEY": PIXWITH_KEY},
                         latency=10, seed=1, **kw)
    app = create_app(cfg, clock=lambda: clock[0])
    transport = httpx.ASGITransport(app=app)
    wiro = WiroProvider(base_url="http://emu/wiro/v1", api_key=WIRO_KEY,
                        api_secret=WIRO_SECRET, transport=transport)
    pix = PixwithProvider(base_url="http://emu/pixwith/api", api_key=PIXWITH_KEY,
                          transport=transport)
    async with wiro, pix:
        yield wiro, pix, app.state.emulator


@pytest.mark.anyio
@pytest.mark.parametrize(("faults", "prompt"), [
    ("task_error=1", "a red tent at dusk"),
    ("", "a red tent at dusk emulator:task_error"),
])
async def test_emulated_task_error_fails_the_task_at_once_and_unbilled(faults: str,
                                                                       prompt: str) -> None:
    now = [1_700_000_000.0]
    async with emulated(now, faults=faults) as (wiro, _pix, state):
        task = await wiro.submit(make_job("wiro/seedream-v4-5", prompt=prompt))
        now[0] += 3.5  # pre-processing: not yet failed
        early = await wiro.poll(task.task_id)
        assert early.state is TaskState.RUNNING
        assert early.provider_status == "task_preprocess_end"
        now[0] += 0.5  # when it would have been given a worker
        final = await wiro.poll(task.task_id)
        assert final.state is TaskState.FAILED
        assert final.provider_status == "task_error"
        assert final.error == WIRO_TASK_ERROR_TEXT
        assert final.outputs == ()
        assert final.cost_usd == 0.0
        now[0] += 60  # it never moves on to a verdict of another kind
        assert (await wiro.poll(task.task_id)).provider_status == "task_error"
        snap = state.snapshot()
        assert snap["tasks_task_error"] == snap["tasks_failed"] == 1
        assert snap["tasks_billed"] == 0
        assert snap["balances"]["wiro_usd"] == 1000.0
        [emulated_task] = state.tasks.values()
        assert (emulated_task.polls, emulated_task.polls_after_end) == (3, 2)
