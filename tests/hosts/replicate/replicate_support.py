"""Shared pieces of the Replicate host's tests: jobs, images, a client on the in-process
emulator that records what it sends."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from runner.emulator import EmulatorConfig
from runner.emulator.state import EmulatorState
from runner.jobs import ImageRef, Job
from runner.providers.replicate import ReplicateProvider
from runner.testing import EMULATOR_URL, ManualClock, emulator_settings, emulator_transport

API = f"{EMULATOR_URL}/replicate/v1"


def make_job(model: str = "replicate/seedream-4.5", prompt: str = "a red tent at dusk",
             params: Mapping[str, Any] | None = None, images: tuple[ImageRef, ...] = ()) -> Job:
    from runner.catalog import get_model

    spec = get_model(model)
    assert spec is not None
    return Job(key="k" * 64, name="job", alias="alias", model=model, provider="replicate",
               prompt=prompt, params=spec.with_defaults(params or {}), images=images)


def png_file(path: Path, size: tuple[int, int] = (64, 48), noise: bool = False) -> ImageRef:
    """A real PNG at ``path``; ``noise`` makes it incompressible (large)."""
    if noise:
        data = random.Random(str(path)).randbytes(size[0] * size[1] * 3)
        image = Image.frombytes("RGB", size, data)
    else:
        image = Image.new("RGB", size, (200, 80, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    return ImageRef(ref=path.name, path=str(path), sha256=digest)


class Recording(httpx.AsyncBaseTransport):
    """A transport that keeps every request it passes on."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@dataclass
class Emulated:
    """A Replicate client on an in-process emulator whose clock moves only when told."""

    client: ReplicateProvider
    transport: Recording
    asgi: httpx.ASGITransport
    clock: ManualClock
    config: EmulatorConfig
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.asgi.app.state.emulator  # type: ignore[attr-defined]
        return state

    def new_client(self, token: str | None = None) -> ReplicateProvider:
        """Another client on the same emulator: what a resumed run has."""
        env = {"REPLICATE_API_TOKEN": token} if token else {}
        settings = emulator_settings("replicate", env=env)
        return ReplicateProvider(base_url=settings.base_url, api_token=settings.api_key,
                                 transport=self.transport)

    async def raw(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=self.asgi, base_url=API) as http:
            return await http.request(method, path, **kw)


def emulated(config: EmulatorConfig | None = None) -> Emulated:
    cfg = config or EmulatorConfig(latency=4.0, seed=1)
    clock = ManualClock()
    asgi = emulator_transport(cfg, ["replicate"], clock=clock)
    rec = Recording(asgi)
    settings = emulator_settings("replicate", env={})
    client = ReplicateProvider(base_url=settings.base_url, api_token=settings.api_key,
                               transport=rec)
    return Emulated(client, rec, asgi, clock, cfg)


def token() -> str:
    from runner.config import demo_credentials

    return demo_credentials()["REPLICATE_API_TOKEN"]
