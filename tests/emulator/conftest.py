"""Shared helpers for the emulator tests: an in-process client, a fake clock, signing."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, create_app

WIRO_KEY = demo_credentials()["WIRO_API_KEY"]
WIRO_SECRET = demo_credentials()["WIRO_API_SECRET"]
PIXWITH_KEY = demo_credentials()["PIXWITH_API_KEY"]
BASE = "http://emulator.test"

# Every key of a tasklist entry on the vendor pages (Kill/Cancel/Detail examples, seedream-v4).
SEED_TASK_KEYS = {
    "id", "uuid", "name", "socketaccesstoken", "parameters", "debugoutput", "debugerror",
    "starttime", "endtime", "elapsedseconds", "status", "cps", "totalcost", "guestid",
    "projectid", "modelid", "description", "basemodelid", "runtype", "modelfolderid",
    "modelfileid", "callbackurl", "marketplaceid", "createtime", "canceltime", "assigntime",
    "accepttime", "preprocessstarttime", "preprocessendtime", "postprocessstarttime",
    "postprocessendtime", "pexit", "categories", "outputs", "size",
}
SEED_OUTPUT_KEYS = {
    "id", "name", "contenttype", "parentid", "uuid", "size", "addedtime", "modifiedtime",
    "accesskey", "foldercount", "filecount", "ispublic", "expiretime", "url",
}
# Fields the vendor pages print as JSON null / a bare number rather than a string.
NON_STRING_FIELDS = {"guestid", "marketplaceid", "parameters", "outputs", "ispublic",
                     "expiretime"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Unix seconds that move only when told."""

    def __init__(self, start: float = 1_734_513_807.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_nonces = itertools.count(1_700_000_000_000)


def sign(key: str = WIRO_KEY, secret: str = WIRO_SECRET, nonce: str | None = None) -> dict[
        str, str]:
    """Wiro auth headers with a fresh nonce."""
    nonce = nonce or str(next(_nonces))
    signature = hmac.new(key.encode(), (secret + nonce).encode(), hashlib.sha256).hexdigest()
    return {"x-api-key": key, "x-nonce": nonce, "x-signature": signature}


class Emu:
    """An in-process emulator behind ``httpx.ASGITransport`` with signed helpers."""

    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state.emulator

    async def wiro(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**sign(), **kwargs.pop("headers", {})}
        return await self.client.post(f"/wiro/v1/{path}", headers=headers, **kwargs)

    async def run(self, slug: str, **kwargs: Any) -> httpx.Response:
        return await self.wiro(f"Run/{slug}", **kwargs)

    async def run_ok(self, slug: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.run(slug, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["result"] is True, body
        return body

    async def detail(self, taskid: str) -> dict[str, Any]:
        response = await self.wiro("Task/Detail", json={"taskid": taskid})
        body = response.json()
        assert body["result"] is True, body
        return body["tasklist"][0]  # type: ignore[no-any-return]

    async def pix(self, path: str, body: Any = None, key: str = PIXWITH_KEY) -> httpx.Response:
        return await self.client.post(f"/pixwith/api/{path}", json=body or {},
                                      headers={"Api-Key": key})

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/__stats")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


EmuFactory = Callable[..., AbstractAsyncContextManager[Emu]]


@pytest.fixture
def emulator() -> EmuFactory:
    """``async with emulator(latency=0.2, clock=clock) as emu:`` — config fields as kwargs."""

    @asynccontextmanager
    async def open_emu(clock: Callable[[], float] | None = None,
                       **config: Any) -> AsyncIterator[Emu]:
        config.setdefault("latency", 1.0)
        cfg = EmulatorConfig(credentials={"WIRO_API_KEY": WIRO_KEY,
                                          "WIRO_API_SECRET": WIRO_SECRET,
                                          "PIXWITH_API_KEY": PIXWITH_KEY}, **config)
        app = create_app(cfg, clock=clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Emu(client, app)

    return open_emu


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="sign")
def sign_fixture() -> Callable[..., dict[str, str]]:
    """``sign()`` → Wiro auth headers with a fresh nonce (key/secret/nonce overridable)."""
    return sign


@pytest.fixture
def seed_shapes() -> dict[str, set[str]]:
    return {"task": SEED_TASK_KEYS, "output": SEED_OUTPUT_KEYS, "non_string": NON_STRING_FIELDS}
