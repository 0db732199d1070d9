"""Shared pieces of the BytePlus host's tests: jobs, an in-process client and emulator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from runner.emulator import EmulatorConfig
from runner.hosts.byteplus import MODELS, SPEC
from runner.jobs import ImageRef, Job
from runner.providers.byteplus import BytePlusProvider
from runner.testing import ManualClock, emulator_settings, emulator_transport

MODEL_40, MODEL_45 = (m.id for m in MODELS)


def job(prompt: str = "a red kite over dunes", *, model: str = MODEL_40,
        params: Mapping[str, Any] | None = None, images: tuple[ImageRef, ...] = (),
        n: int = 1) -> Job:
    spec = next(m for m in MODELS if m.id == model)
    return Job(key=f"{n:064x}", name=f"job-{n}", alias="bp", model=model, provider=SPEC.name,
               prompt=prompt, params=spec.with_defaults(params or {}), images=images)


@contextlib.asynccontextmanager
async def client(config: EmulatorConfig | None = None, *, clock: ManualClock | None = None,
                 api_key: str | None = None) -> AsyncIterator[tuple[BytePlusProvider, Any]]:
    """A client against a fresh in-process emulator; yields (client, emulator state)."""
    transport = emulator_transport(config or EmulatorConfig(latency=0.0, seed=1),
                                   [SPEC.name], clock=clock)
    settings = emulator_settings(SPEC.name)
    provider = BytePlusProvider(base_url=settings.base_url,
                                api_key=settings.api_key if api_key is None else api_key,
                                transport=transport)
    try:
        yield provider, transport.app.state.emulator
    finally:
        await provider.aclose()
