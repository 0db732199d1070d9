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


def test_tasks_end_when_their_time_comes_and_are_billed_in_creation_order() -> None:
    # durations drawn with ±90 % jitter end out of creation order; one settle that finds
    # several due finishes (and bills) them in the order they were created, as a scan of
    # every task in creation order would; a cancelled task is never finished; what the
    # running tasks reserve of the account is freed as each ends
    now = [1000.0]
    state = create_app(EmulatorConfig(latency=10.0, jitter=0.9, seed=4),
                       clock=lambda: now[0]).state.emulator
    tasks = []
    for _ in range(40):
        now[0] += 0.01
        tasks.append(state.new_task("pixwith", model="seedream-4.5", prompt="same prompt",
                                    reserve=6))
    assert state.reserved("pixwith") == 240
    ends = [t.created + t.duration for t in tasks]
    assert ends != sorted(ends)  # the jitter put their ends out of creation order
    state.cancel(tasks[5])
    middle = sorted(ends)[20]
    now[0] = middle
    state.settle()
    done = [t for t in tasks if t.outcome == "succeeded"]
    assert done == [t for t in tasks if t is not tasks[5] and t.created + t.duration <= middle]
    assert state.active_count("pixwith") == 40 - 1 - len(done)
    assert state.reserved("pixwith") == 6 * (40 - 1 - len(done))
    assert [t.finished for t in done] == [t.created + t.duration for t in done]
    now[0] = max(ends) + 1
    state.settle()
    assert state.active_count("pixwith") == 0
    assert state.reserved("pixwith") == 0
    assert tasks[5].outcome == "cancelled"
    # the second settle billed the rest in creation order, after the first's
    paid = state.stats.paid[tasks[0].request_key]
    later = [t for t in tasks if t.outcome == "succeeded" and t not in done]
    assert paid == done + later
    assert state.snapshot()["tasks_succeeded"] == 39
