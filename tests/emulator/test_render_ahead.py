"""``EmulatorConfig.render_ahead``: outputs rendered halfway through their task, not at the
download — the same bytes, served at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

V45 = "bytedance/seedream-v4-5"


async def rendered_ahead(emu: Any) -> int:
    return int((await emu.stats())["outputs_rendered_ahead"])


async def served(emu: Any, taskid: str) -> list[bytes]:
    task = await emu.detail(taskid)
    assert task["status"] == "task_postprocess_end"
    return [(await emu.client.get(out["url"])).content for out in task["outputs"]]


async def test_outputs_are_rendered_halfway_through_their_task(emulator: Any,
                                                               clock: Any) -> None:
    async with emulator(clock=clock, latency=10.0, render_ahead=True) as emu:
        kept = (await emu.run_ok(V45, data={"prompt": "a tower", "maxImages": "2"}))["taskid"]
        gone = (await emu.run_ok(V45, data={"prompt": "a bridge"}))["taskid"]
        assert (await emu.wiro("Task/Cancel", json={"taskid": gone})).json()["result"] is True
        planned = emu.state._ahead[("wiro", kept)]
        assert len(planned) == 2
        clock.advance(4.9)
        await asyncio.sleep(1.2)  # the renderer looks again within a second: not due yet
        assert [f.data for f in planned] == [None, None]
        assert await rendered_ahead(emu) == 0
        clock.advance(0.1)  # halfway
        for _ in range(400):  # a hang guard, not a speed claim
            if await rendered_ahead(emu) == 2:
                break
            await asyncio.sleep(0.05)
        assert await rendered_ahead(emu) == 2  # the cancelled task's output never rendered
        assert all(f.data for f in planned)
        assert emu.state.next_render_at() is None
        assert emu.app.state.renderer.done()  # nothing planned: the renderer stopped
        clock.advance(5.01)
        ahead = await served(emu, kept)
        # the files served are the ones rendered ahead, and nothing more was rendered
        assert ahead == [f.data for f in planned]
        assert await rendered_ahead(emu) == 2

    async with emulator(clock=clock, latency=10.0) as plain:  # rendered at the download
        task = (await plain.run_ok(V45, data={"prompt": "a tower", "maxImages": "2"}))["taskid"]
        clock.advance(10.01)
        assert await served(plain, task) == ahead  # byte for byte
        assert await rendered_ahead(plain) == 0
        assert not plain.state._ahead


async def test_a_task_submitted_later_restarts_the_renderer(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, latency=2.0, render_ahead=True) as emu:
        for n, prompt in enumerate(("first", "second"), start=1):
            await emu.run_ok(V45, data={"prompt": prompt})
            clock.advance(1.0)
            for _ in range(400):
                if await rendered_ahead(emu) == n:
                    break
                await asyncio.sleep(0.05)
            assert await rendered_ahead(emu) == n
            for _ in range(400):
                if emu.app.state.renderer.done():
                    break
                await asyncio.sleep(0.05)
            assert emu.app.state.renderer.done()
