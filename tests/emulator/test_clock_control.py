"""``POST /__clock``: tests hold tasks unfinished and finish them at will, never by timing."""

from __future__ import annotations

import asyncio

import httpx

from runner.emulator import EmulatorConfig, create_app


def test_freeze_holds_time_and_advance_moves_it() -> None:
    now = [1000.0]
    app = create_app(EmulatorConfig(latency=2.0), clock=lambda: now[0])
    state = app.state.emulator

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://emulator") as client:
            async def clock(**change: object) -> httpx.Response:
                return await client.post("/__clock", json=change)

            assert (await clock(freeze=True)).json()["frozen"] is True
            now[0] += 500  # the machine's time goes on …
            assert state.now() == 1000.0  # … the emulator's stands still
            await clock(advance=30)
            assert state.now() == 1030.0
            assert (await clock(freeze=False)).json()["frozen"] is False
            assert state.now() == 1030.0  # restarts from where it stood
            now[0] += 1
            assert state.now() == 1031.0
            await clock(advance=-31)
            assert state.now() == 1000.0
            assert (await clock(advance="soon")).status_code == 400

    asyncio.run(scenario())
