"""Scale: a client allowed thousands of tasks in flight keeps its HTTP parallelism bounded.

Tasks in flight need no open connection. A connection pool's bookkeeping grows with the
connections and queued requests it holds, so a pool sized to the task limit costs CPU that
grows with the tasks in flight (``bench/inflight.py`` measures the client at 10,000).
"""

from __future__ import annotations

import asyncio

import pytest

from runner.catalog import models as installed_models
from runner.config import demo_credentials, resolve
from runner.emulator import EmulatorConfig, serve_in_thread
from runner.jobs import Estimate, Job, job_key
from runner.providers import make_provider
from runner.providers.http import MAX_PARALLEL_DOWNLOADS

pytestmark = pytest.mark.e2e


def _job(i: int) -> Job:
    model = "wiro/seedream-v4"
    params = installed_models()[model].with_defaults({"size": "1024x1024"})
    prompt = f"scale {i}"
    return Job(key=job_key(model, prompt, params, (), 0), name=f"scale-{i}", alias="v4",
               model=model, provider="wiro", prompt=prompt, params=params,
               estimate=Estimate(1, 0.03, 0.0))


def test_thousands_of_tasks_allowed_do_not_mean_thousands_of_connections() -> None:
    # Every answer takes 0.2 s, so requests sent together overlap at the server.
    cfg = EmulatorConfig(latency=60, concurrency=10_000, faults="slow=1,slow_seconds=0.2")
    with serve_in_thread(cfg) as server:
        settings = resolve("wiro", None, dict(demo_credentials()), demo=True,
                           base_url=server.wiro_base_url)
        provider = make_provider(settings, concurrency=5_000)

        async def go() -> list[str]:
            try:
                submitted = await provider.submit(_job(0))
                polls = await asyncio.gather(*(provider.poll(submitted.task_id)
                                               for _ in range(200)))
                return [str(p.state) for p in polls]
            finally:
                await provider.aclose()

        states = asyncio.run(go())
        stats = server.stats()
    assert len(states) == 200
    assert stats["requests_by_status"] == {"200": 201}
    assert stats["inflight_requests_peak"] <= 32


def test_downloads_in_progress_never_hold_up_api_calls() -> None:
    # A submit waiting for a connection sits in the journal as ``submitting`` (its fate
    # unknown after a crash) though nothing has left: downloads must not take its turn.
    with serve_in_thread(EmulatorConfig(latency=0, concurrency=100)) as server:
        settings = resolve("wiro", None, dict(demo_credentials()), demo=True,
                           base_url=server.wiro_base_url)
        provider = make_provider(settings, concurrency=10)

        async def go() -> str:
            release = asyncio.Event()
            busy = asyncio.Event()
            opened = 0

            async def hold(url: str) -> None:  # a download started, its body not yet read
                nonlocal opened
                async with provider.stream(url):
                    opened += 1
                    if opened == MAX_PARALLEL_DOWNLOADS:
                        busy.set()
                    await release.wait()

            try:
                done = await provider.poll((await provider.submit(_job(1))).task_id)
                holders = [asyncio.create_task(hold(done.outputs[0].url)) for _ in range(24)]
                # every download connection is taken (the rest wait for one) before the
                # submit is sent: forced, not left to a pause being long enough
                await asyncio.wait_for(busy.wait(), 30)
                try:
                    task = await asyncio.wait_for(provider.submit(_job(2)), 10)
                    status = await asyncio.wait_for(provider.poll(task.task_id), 10)
                finally:
                    release.set()
                    await asyncio.gather(*holders)
                return str(status.state)
            finally:
                await provider.aclose()

        assert asyncio.run(go()) == "succeeded"
