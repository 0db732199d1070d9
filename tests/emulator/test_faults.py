"""Each fault kind, at rate 1.0, is observable by a client and counted in /__stats."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

V4 = "bytedance/seedream-v4"
PIX_BODY = {"prompt": "p", "model_id": "0-32", "options": {"prompt_optimization": False}}


async def test_429_carries_the_provider_envelope(emulator: Any) -> None:
    async with emulator(faults="429=1", seed=3) as emu:
        answers = [await emu.run(V4, json={"prompt": "x"}) for _ in range(12)]
        for answer in answers:
            assert answer.status_code == 429
            assert answer.json()["result"] is False
            assert answer.json()["errors"][0]["code"] == 0
        retry_after = [a.headers.get("retry-after") for a in answers]
        assert any(r is None for r in retry_after)  # sometimes…
        assert {int(r) for r in retry_after if r is not None} <= {1, 2}  # …in whole seconds
        assert any(r is not None for r in retry_after)
        pix = await emu.pix("task/create", PIX_BODY)
        assert pix.status_code == 429
        assert pix.json()["code"] == 0
        stats = await emu.stats()
        assert stats["faults"]["429"] == 13
        assert stats["tasks_created_total"] == 0
        assert stats["requests_by_status"]["429"] == 13


async def test_5xx_creates_nothing(emulator: Any) -> None:
    async with emulator(faults="5xx=1", seed=5) as emu:
        statuses = {(await emu.run(V4, json={"prompt": "x"})).status_code for _ in range(20)}
        assert statuses <= {500, 502, 503}
        assert len(statuses) >= 2
        stats = await emu.stats()
        assert stats["faults"]["5xx"] == 20
        assert stats["tasks_created_total"] == 0


async def test_drop_before_or_after_creating_the_task(emulator: Any) -> None:
    async with emulator(faults="drop=1", seed=11) as emu:
        for _ in range(16):
            with pytest.raises(httpx.RemoteProtocolError):
                await emu.run(V4, json={"prompt": "unknown outcome"})
        stats = await emu.stats()
        assert stats["faults"]["drop"] == 16
        after = stats["faults"]["drop_after"]
        assert 0 < after < 16  # both cases happen
        # a drop after creation left a real task behind: the dangerous case
        assert stats["tasks_created_total"] == after
        assert stats["requests_by_status"]["dropped"] == 16


async def test_drop_is_a_transport_error_for_clients(emulator: Any) -> None:
    async with emulator(faults="drop=1") as emu:
        with pytest.raises(httpx.TransportError):
            await emu.pix("task/get_credits")


async def test_slow_delays_the_answer(emulator: Any) -> None:
    async with emulator(faults="slow=1,slow_seconds=0.2") as emu:
        started = time.monotonic()
        response = await emu.run(V4, json={"prompt": "x"})
        assert time.monotonic() - started >= 0.2
        assert response.json()["result"] is True  # slow, not wrong
        assert (await emu.stats())["faults"]["slow"] == 1


async def test_fail_ends_wiro_tasks_failed_and_unbilled(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, faults="fail=1", latency=1.0) as emu:
        run = await emu.run_ok(V4, json={"prompt": "doomed"})
        seen = set()
        for _ in range(10):
            seen.add((await emu.detail(run["taskid"]))["status"])
            clock.advance(0.1)
        assert "task_error" in seen  # the model writes to stderr on its way down
        clock.advance(0.01)
        task = await emu.detail(run["taskid"])
        assert task["status"] == "task_postprocess_end"
        assert task["pexit"] != "0"
        assert task["outputs"] == []
        assert task["totalcost"] == "0"
        assert "Error" in task["debugerror"]
        stats = await emu.stats()
        assert stats["faults"]["fail"] == 1
        assert stats["tasks_failed"] == 1
        assert stats["tasks_billed"] == 0
        assert stats["balances"]["wiro_usd"] == 1000.0


async def test_fail_ends_pixwith_tasks_with_status_3(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, faults="fail=1") as emu:
        task_id = (await emu.pix("task/create", PIX_BODY)).json()["data"]["task_id"]
        clock.advance(5)
        data = (await emu.pix("task/get", {"task_id": task_id})).json()["data"]
        assert data["status"] == 3
        assert data["result_urls"] == []
        assert (await emu.pix("task/get_credits")).json()["data"]["credits"] == 500


async def test_truncate_cuts_downloads_short(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        run = await emu.run_ok(V4, json={"prompt": "to download"})
        clock.advance(5)
        url = (await emu.detail(run["taskid"]))["outputs"][0]["url"]
        changed = await emu.client.post("/__faults", json={"faults": "truncate=1"})
        assert changed.json() == {"ok": True, "faults": "truncate=1"}
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await emu.client.get(url)
        await emu.client.post("/__faults", json={"faults": ""})
        assert (await emu.client.get(url)).status_code == 200
        stats = await emu.stats()
        assert stats["faults"]["truncate"] == 1
        bad = await emu.client.post("/__faults", json={"faults": "truncate=7"})
        assert bad.status_code == 400
        assert "between 0 and 1" in bad.json()["error"]


async def test_downloads_meet_5xx_and_drop_but_never_429(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        run = await emu.run_ok(V4, json={"prompt": "cdn"})
        clock.advance(5)
        url = (await emu.detail(run["taskid"]))["outputs"][0]["url"]
        await emu.client.post("/__faults", json={"faults": "429=1"})
        assert (await emu.client.get(url)).status_code == 200
        await emu.client.post("/__faults", json={"faults": "5xx=1"})
        assert (await emu.client.get(url)).status_code in (500, 502, 503)
        await emu.client.post("/__faults", json={"faults": "drop=1"})
        with pytest.raises(httpx.RemoteProtocolError):
            await emu.client.get(url)


async def test_control_routes_are_never_faulted(emulator: Any) -> None:
    spec = "429=1,5xx=1,drop=1,slow=1,truncate=1,fail=1,slow_seconds=5"
    async with emulator(faults=spec) as emu:
        started = time.monotonic()
        assert (await emu.client.get("/__stats")).status_code == 200
        assert (await emu.client.get("/__")).json()["faults"].startswith("429=1")
        assert (await emu.client.post("/__reset")).json() == {"ok": True}
        assert time.monotonic() - started < 2
        stats = await emu.stats()
        assert stats["requests_total"] == 0
        assert sum(stats["faults"].values()) == 0
