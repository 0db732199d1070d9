"""Contract tests: each client against the project's emulator, in process and over a socket.

The emulator speaks the vendors' wire formats; these tests drive the clients through whole
task lives (submit → poll → download), the typed errors the emulator can provoke, and
cancel/kill, using only the emulator's public API (create_app, serve_in_thread, the
``/__faults`` control route).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from runner.config import ProviderSettings
from runner.emulator import EmulatorConfig, FaultSpec, create_app, serve_in_thread
from runner.errors import (
    AuthError,
    CancelUnsupported,
    ConcurrencyLimited,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.providers import make_provider
from runner.providers.base import TaskState, TaskStatus
from runner.providers.pixwith import PixwithProvider
from runner.providers.wiro import WiroProvider

from .conftest import (
    PIXWITH_KEY,
    WIRO_KEY,
    WIRO_SECRET,
    jpeg_bytes,
    local_ref,
    make_job,
    png_bytes,
    url_ref,
)

HOST = "http://127.0.0.1"
PRICES = {"wiro/seedream-v4-5": 0.04, "wiro/seedream-v4": 0.03, "wiro/seedream-v3": 0.03}


def config(**kw: Any) -> EmulatorConfig:
    kw.setdefault("latency", 0.15)
    kw.setdefault("seed", 7)
    return EmulatorConfig(credentials={"WIRO_API_KEY": WIRO_KEY, "WIRO_API_SECRET": WIRO_SECRET,
                                       "PIXWITH_API_KEY": PIXWITH_KEY}, **kw)


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to another transport and keeps each one's method, URL and body."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append((request.method, str(request.url), body))
        return await self.inner.handle_async_request(request)

    def json_bodies(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(b) for _, url, b in self.sent if url.endswith(suffix)]


def wiro_settings(base: str, key: str = WIRO_KEY, secret: str = WIRO_SECRET) -> ProviderSettings:
    return ProviderSettings("wiro", f"{base}/wiro/v1", key, secret)


def pixwith_settings(base: str, key: str = PIXWITH_KEY) -> ProviderSettings:
    return ProviderSettings("pixwith", f"{base}/pixwith/api", key)


@asynccontextmanager
async def in_process(cfg: EmulatorConfig, **app_kw: Any) -> AsyncIterator[
        tuple[WiroProvider, PixwithProvider, Recorder]]:
    app = create_app(cfg, **app_kw)
    recorder = Recorder(httpx.ASGITransport(app=app))
    wiro = WiroProvider(base_url=f"{HOST}/wiro/v1", api_key=WIRO_KEY, api_secret=WIRO_SECRET,
                        transport=recorder)
    pix = PixwithProvider(base_url=f"{HOST}/pixwith/api", api_key=PIXWITH_KEY,
                          transport=recorder)
    async with wiro, pix:
        yield wiro, pix, recorder


async def until_terminal(provider: Any, task_id: str, pause: float = 0.03) -> list[TaskStatus]:
    seen = []
    with anyio.fail_after(10):
        while True:
            status = await provider.poll(task_id)
            seen.append(status)
            if status.state.terminal:
                return seen
            await anyio.sleep(pause)


async def download(provider: Any, url: str) -> tuple[bytes, httpx.Response]:
    async with provider.stream(url) as response:
        data = b"".join([chunk async for chunk in response.aiter_bytes()])
    return data, response


def assert_png(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        return img.size


@pytest.fixture
def refs(tmp_path: Path) -> dict[str, Path]:
    a, b = tmp_path / "left.png", tmp_path / "right.jpg"
    a.write_bytes(png_bytes(12, 9, (10, 200, 10)))
    b.write_bytes(jpeg_bytes(9, 12))
    return {"png": a, "jpg": b}


# -- whole task lives -------------------------------------------------------------------------

WIRO_CASES = [
    ("wiro/seedream-v4-5", {"width": 2560, "height": 1440, "maxImages": 2, "watermark": False},
     True),
    ("wiro/seedream-v4", {"size": "2048x2048", "maxImages": 1, "watermark": True}, True),
    ("wiro/seedream-v3", {"size": "1280x720", "watermark": False, "guidanceScale": 2.5,
                          "seed": 42}, False),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "params", "with_images"), WIRO_CASES)
async def test_wiro_models_end_to_end(refs: dict[str, Path], model: str, params: dict[str, Any],
                                      with_images: bool) -> None:
    images = (url_ref("https://img.example/style.png"), local_ref(refs["png"]),
              url_ref("https://img.example/pose.jpg"), local_ref(refs["jpg"])) \
        if with_images else ()
    job = make_job(model, prompt=f"a tent by a lake ({model})", params=params, images=images)
    async with in_process(config()) as (wiro, _pix, recorder):
        submitted = await wiro.submit(job)
        assert submitted.task_id
        assert submitted.token
        history = await until_terminal(wiro, submitted.task_id)
        final = history[-1]
        assert final.state is TaskState.SUCCEEDED, final
        assert final.error is None
        assert final.provider_status == "task_postprocess_end pexit=0"
        assert all(s.state in (TaskState.QUEUED, TaskState.RUNNING) for s in history[:-1])
        expected_images = params.get("maxImages", 1)
        assert len(final.outputs) == expected_images
        assert final.cost_usd == pytest.approx(PRICES[model] * expected_images)
        for out in final.outputs:
            data, response = await download(wiro, out.url)
            assert_png(data)
            assert out.content_type == "image/png"
            assert out.size == len(data) == int(response.headers["content-length"])
        # The order of reference images survived, end to end: Wiro lists them back.
        detail = await wiro._post_json("poll", "Task/Detail", {"taskid": submitted.task_id},
                                       op="poll", subject=submitted.task_id)
        listed = detail["tasklist"][0]["parameters"].get("inputImage", "")
        if with_images:
            sent = listed.split(",")
            assert sent[0] == "https://img.example/style.png"
            assert sent[2] == "https://img.example/pose.jpg"
            assert (await download(wiro, sent[1]))[0] == refs["png"].read_bytes()
            assert (await download(wiro, sent[3]))[0] == refs["jpg"].read_bytes()
        else:
            assert listed == ""
        kinds = wiro.requests_sent
        assert kinds["submit"] == 1
        assert kinds["poll"] == len(history) + 1
        assert kinds["download"] == len(final.outputs) + (2 if with_images else 0)
        assert sum(1 for method, *_ in recorder.sent if method == "POST") == (
            kinds["submit"] + kinds["poll"])


@pytest.mark.anyio
async def test_pixwith_end_to_end_with_uploads(refs: dict[str, Path]) -> None:
    job = make_job("pixwith/seedream-4.5", prompt="two tents, anime style",
                   params={"num_outputs": 2, "resolution": "2K", "aspect_ratio": "16:9",
                           "prompt_optimization": True},
                   images=(local_ref(refs["jpg"]), url_ref("https://img.example/style.png"),
                           local_ref(refs["png"])))
    async with in_process(config()) as (_wiro, pix, recorder):
        credits_before = await pix.get_credits()
        submitted = await pix.submit(job)
        assert submitted.estimated_seconds is not None
        assert submitted.estimated_seconds >= 1
        (create,) = recorder.json_bodies("/task/create")
        urls = create["image_urls"]
        assert urls[1] == "https://img.example/style.png"
        assert (await download(pix, urls[0]))[0] == refs["jpg"].read_bytes()
        assert (await download(pix, urls[2]))[0] == refs["png"].read_bytes()
        history = await until_terminal(pix, submitted.task_id)
        final = history[-1]
        assert final.state is TaskState.SUCCEEDED
        assert final.provider_status == "2"
        assert final.credits == 12
        assert len(final.outputs) == 2
        for out in final.outputs:
            data, response = await download(pix, out.url)
            width, height = assert_png(data)
            assert width > height  # 16:9
            assert len(data) == int(response.headers["content-length"])
        assert await pix.get_credits() == credits_before - 12
        assert pix.requests_sent["upload"] == 4
        assert pix.requests_sent["submit"] == 1
        assert pix.requests_sent["balance"] == 2


# -- errors the emulator provokes -------------------------------------------------------------

@pytest.mark.anyio
async def test_wrong_credentials_are_auth_errors() -> None:
    app = create_app(config())
    transport = httpx.ASGITransport(app=app)
    cases = [(wiro_settings(HOST, secret="wrong-secret"), "wiro/seedream-v4"),
             (wiro_settings(HOST, key="wrong-key"), "wiro/seedream-v4"),
             (pixwith_settings(HOST, key="key_wrong"), "pixwith/seedream-4.5")]
    for settings, model in cases:
        async with make_provider(settings, transport=transport) as client:
            with pytest.raises(AuthError) as info:
                await client.submit(make_job(model))
            assert "wrong-" not in str(info.value)
            with pytest.raises(AuthError):
                await client.poll("100001")


@pytest.mark.anyio
async def test_concurrency_limit_then_a_freed_slot() -> None:
    async with in_process(config(concurrency=2, latency=30)) as (wiro, pix, _):
        first = await wiro.submit(make_job())
        await wiro.submit(make_job())
        with pytest.raises(ConcurrencyLimited) as info:
            await wiro.submit(make_job())
        assert info.value.code == 96
        await wiro.cancel(first.task_id, TaskState.QUEUED)
        assert (await wiro.poll(first.task_id)).state is TaskState.CANCELLED
        assert (await wiro.submit(make_job())).task_id  # the freed slot is usable

        await pix.submit(make_job("pixwith/seedream-4.5"))
        await pix.submit(make_job("pixwith/seedream-4.5"))
        with pytest.raises(ConcurrencyLimited):
            await pix.submit(make_job("pixwith/seedream-4.5"))


@pytest.mark.anyio
@pytest.mark.parametrize(("faults", "error"), [
    ("429=1", RateLimited), ("5xx=1", ServerError),
])
async def test_api_faults_are_transient_errors(faults: str, error: type[Exception]) -> None:
    async with in_process(config(faults=FaultSpec.parse(faults))) as (wiro, pix, _):
        for call in (wiro.submit(make_job()), wiro.poll("100001"),
                     pix.submit(make_job("pixwith/seedream-4.5")), pix.poll("x")):
            with pytest.raises(error) as info:
                await call
            if error is RateLimited:
                assert info.value.http_status == 429
                assert info.value.retry_after in (None, 1.0, 2.0)


@pytest.mark.anyio
async def test_dropped_answers() -> None:
    async with in_process(config(faults=FaultSpec.parse("drop=1"))) as (wiro, pix, _):
        with pytest.raises(UnknownOutcome):
            await wiro.submit(make_job())
        with pytest.raises(UnknownOutcome):
            await pix.submit(make_job("pixwith/seedream-4.5"))
        with pytest.raises(ServerError):
            await wiro.poll("100001")
        with pytest.raises(ServerError):
            await wiro.cancel("100001", TaskState.RUNNING)


@pytest.mark.anyio
async def test_failed_tasks_report_failure_with_reason() -> None:
    now = [1_700_000_000.0]
    async with in_process(config(latency=10, faults=FaultSpec.parse("fail=1")),
                          clock=lambda: now[0]) as (wiro, pix, _):
        task = await wiro.submit(make_job("wiro/seedream-v4-5"))
        now[0] += 7.5  # the failing model's stderr is in (task_error_full, not task_error)
        interim = await wiro.poll(task.task_id)
        assert interim.provider_status == "task_error_full"
        assert interim.state is TaskState.RUNNING  # not the verdict yet
        now[0] += 3
        final = await wiro.poll(task.task_id)
        assert final.state is TaskState.FAILED
        assert final.provider_status == "task_postprocess_end pexit=1"
        assert final.error is not None
        assert "RuntimeError" in final.error
        assert final.outputs == ()
        assert final.cost_usd == 0.0

        ptask = await pix.submit(make_job("pixwith/seedream-4.5"))
        assert (await pix.poll(ptask.task_id)).state is TaskState.RUNNING
        now[0] += 11
        pfinal = await pix.poll(ptask.task_id)
        assert pfinal.state is TaskState.FAILED
        assert pfinal.provider_status == "3"
        assert pfinal.error
        assert pfinal.credits is None


@pytest.mark.anyio
async def test_truncated_download_is_a_transient_error() -> None:
    async with in_process(config()) as (wiro, _pix, _):
        task = await wiro.submit(make_job("wiro/seedream-v3"))
        final = (await until_terminal(wiro, task.task_id))[-1]
        assert final.state is TaskState.SUCCEEDED
        control = await wiro.client.post(f"{HOST}/__faults", json={"faults": "truncate=1"})
        assert control.json()["ok"] is True
        with pytest.raises(ServerError):
            await download(wiro, final.outputs[0].url)


@pytest.mark.anyio
async def test_cancel_queued_and_kill_running_on_a_controlled_clock() -> None:
    now = [1_700_000_000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    async with in_process(config(latency=10), clock=clock) as (wiro, pix, recorder):
        queued = await wiro.submit(make_job())
        assert (await wiro.poll(queued.task_id)).state is TaskState.QUEUED
        await wiro.cancel(queued.task_id, TaskState.QUEUED)
        assert (await wiro.poll(queued.task_id)).state is TaskState.CANCELLED

        running = await wiro.submit(make_job())
        now[0] += 5  # half way: task_start
        status = await wiro.poll(running.task_id)
        assert status.state is TaskState.RUNNING
        await wiro.cancel(running.task_id, TaskState.RUNNING)
        assert (await wiro.poll(running.task_id)).state is TaskState.CANCELLED

        stale = await wiro.submit(make_job())
        now[0] += 6  # it moved on since the caller last looked: Cancel refuses, Kill works
        await wiro.cancel(stale.task_id, TaskState.QUEUED)
        assert (await wiro.poll(stale.task_id)).state is TaskState.CANCELLED

        paths = [url.rsplit("/v1/", 1)[-1] for method, url, _ in recorder.sent
                 if "/Task/Cancel" in url or "/Task/Kill" in url]
        assert paths == ["Task/Cancel", "Task/Kill", "Task/Cancel", "Task/Kill"]
        assert wiro.requests_sent["cancel"] == 4

        ptask = await pix.submit(make_job("pixwith/seedream-4.5"))
        with pytest.raises(CancelUnsupported):  # said, never a silent success
            await pix.cancel(ptask.task_id, TaskState.RUNNING)
        assert (await pix.poll(ptask.task_id)).state is TaskState.RUNNING


# -- over a real loopback socket --------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.e2e
async def test_over_a_real_socket(refs: dict[str, Path]) -> None:
    with serve_in_thread(config()) as server:
        wiro = make_provider(wiro_settings(server.url), concurrency=4)
        pix = make_provider(pixwith_settings(server.url), concurrency=4)
        assert wiro.base_url == server.wiro_base_url
        assert pix.base_url == server.pixwith_base_url
        async with wiro, pix:
            jobs = [
                (wiro, make_job("wiro/seedream-v4", params={"maxImages": 1},
                                images=(local_ref(refs["png"]),
                                        url_ref("https://img.example/a.png")))),
                (wiro, make_job("wiro/seedream-v3")),
                (pix, make_job("pixwith/seedream-4.5", images=(local_ref(refs["jpg"]),))),
            ]
            finals: list[TaskStatus] = []

            async def one(provider: Any, job: Any) -> None:
                task = await provider.submit(job)
                final = (await until_terminal(provider, task.task_id))[-1]
                assert final.state is TaskState.SUCCEEDED
                for out in final.outputs:
                    data, response = await download(provider, out.url)
                    assert_png(data)
                    assert len(data) == int(response.headers["content-length"])
                finals.append(final)

            async with anyio.create_task_group() as tg:
                for provider, job in jobs:
                    tg.start_soon(one, provider, job)
            assert len(finals) == 3
            stats = await anyio.to_thread.run_sync(server.stats)
            sent = sum(sum(p.requests_sent.values()) for p in (wiro, pix))
            assert stats["requests_total"] == sent
            assert stats["tasks_succeeded"] == 3
            assert stats["duplicate_paid"] == 0
            assert stats["rejections"].get("auth", 0) == 0  # every nonce fresh and accepted

            # a connection dropped by the server is an unknown outcome for a submit
            await anyio.to_thread.run_sync(server.set_faults, "drop=1")
            with pytest.raises(UnknownOutcome):
                await wiro.submit(make_job())
            with pytest.raises(ServerError):
                await pix.poll("x")
