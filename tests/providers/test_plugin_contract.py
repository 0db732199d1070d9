"""The provider contract of ``runner.testing`` — the one every plugin's tests call — met by
seedbatch's own hosts: Wiro (which can cancel a task) and Pixwith (which cannot) pass the
same checks, in process and over a loopback socket. And the checker itself: each kind of
breach it exists to catch is caught, and named.

No assertion depends on timing: the contract moves the emulator's clock by hand
(``ManualClock``), so a task is in flight, or has ended, because the test said so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx
import pytest

from runner.config import ProviderSettings
from runner.emulator import EmulatorConfig
from runner.errors import ConfigError, JobRejected
from runner.jobs import Price
from runner.plugins import registry
from runner.providers.base import Provider, TaskState, TaskStatus
from runner.spec import ModelSpec, ProviderSpec
from runner.testing import (
    EMULATOR_URL,
    ContractFailure,
    ManualClock,
    check_models,
    check_provider_contract,
    emulator_settings,
    emulator_transport,
    serve_emulator,
)

from .conftest import make_job


def spec_of(name: str) -> ProviderSpec:
    return registry().provider(name)


@pytest.mark.anyio
@pytest.mark.parametrize("over_socket", [False, True], ids=["in-process", "socket"])
@pytest.mark.parametrize(("name", "cancel"), [("wiro", "cancelled"), ("pixwith", "runs on")])
async def test_both_kinds_of_host_meet_the_same_contract(name: str, cancel: str,
                                                         over_socket: bool) -> None:
    spec = spec_of(name)
    result = await check_provider_contract(spec, over_socket=over_socket)
    assert result.provider == name
    assert result.model == spec.models[0].id
    assert result.models_checked == tuple(m.id for m in spec.models)
    assert result.outputs == 1  # the defaults ask for one image
    assert len(result.output_bytes) == 1
    assert result.output_bytes[0] > 100
    assert result.cancel == cancel
    assert (result.cancel == "cancelled") is spec.can_cancel
    assert result.polls == 2  # one before the clock moved, one after: it ended at once


@pytest.mark.anyio
async def test_the_contract_takes_a_model_and_its_params() -> None:
    result = await check_provider_contract(spec_of("wiro"), model="wiro/seedream-v4",
                                           params={"size": "1024x1024", "maxImages": 3})
    assert result.model == "wiro/seedream-v4"
    assert 1 <= result.outputs <= 3
    assert len(result.output_bytes) == result.outputs
    with pytest.raises(ValueError, match="not valid for wiro/seedream-v4"):
        await check_provider_contract(spec_of("wiro"), model="wiro/seedream-v4",
                                      params={"maxImages": 99})
    with pytest.raises(ContractFailure, match="no model 'wiro/nope'"):
        await check_provider_contract(spec_of("wiro"), model="wiro/nope")


# -- breaches the contract catches ---------------------------------------------------------------

@pytest.mark.anyio
async def test_a_host_that_cannot_cancel_must_not_claim_it() -> None:
    claims = replace(spec_of("pixwith"), can_cancel=True)
    with pytest.raises(ContractFailure, match=r"'pixwith'.*cancel: can_cancel is True but "
                                              r"cancel raised CancelUnsupported"):
        await check_provider_contract(claims)


@pytest.mark.anyio
async def test_a_host_that_cancels_must_say_so() -> None:
    denies = replace(spec_of("wiro"), can_cancel=False)
    with pytest.raises(ContractFailure, match="can_cancel is False but cancel returned"):
        await check_provider_contract(denies)


class ReportsAnything:
    """A client that reports unknown tasks as running instead of refusing them."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.submit, self.cancel, self.stream = inner.submit, inner.cancel, inner.stream

    async def poll(self, task_id: str) -> TaskStatus:
        try:
            return await self.inner.poll(task_id)
        except JobRejected:
            return TaskStatus(task_id, TaskState.RUNNING)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.anyio
async def test_polling_an_unknown_id_must_be_refused() -> None:
    base = spec_of("pixwith")

    def factory(settings: ProviderSettings, **kw: Any) -> Provider:
        return ReportsAnything(base.make_client(settings, **kw))

    with pytest.raises(ContractFailure, match=r"poll \(unknown id\): task '999999999' was "
                                              r"reported"):
        await check_provider_contract(replace(base, client=factory))


@pytest.mark.anyio
async def test_defaults_that_break_the_schema_are_caught_before_anything_runs() -> None:
    broken = ModelSpec("pixwith/broken", "pixwith", "0-32", "broken",
                       {"type": "object", "additionalProperties": False,
                        "properties": {"n": {"type": "integer", "minimum": 1, "default": 0}}},
                       Price(credits_per_image=1))
    spec = replace(spec_of("pixwith"), models=(*spec_of("pixwith").models, broken))
    with pytest.raises(ContractFailure, match=r"models: pixwith/broken: its defaults are not "
                                              r"valid parameters \(params.n: .*less than the "
                                              r"minimum of 1"):
        await check_provider_contract(spec)
    foreign = replace(spec_of("pixwith"), models=(replace(broken, id="acme/x"),))
    with pytest.raises(ContractFailure, match="must be named 'pixwith/…'"):
        check_models(foreign)


@pytest.mark.anyio
async def test_a_provider_that_is_not_installed_is_named_with_what_to_do() -> None:
    model = replace(spec_of("pixwith").models[0], id="acme/fast-v1", provider="acme")
    acme = replace(spec_of("pixwith"), name="acme", models=(model,))
    with pytest.raises(ContractFailure, match=r"'acme'.*installed: no installed provider "
                                              r"'acme' \(installed: [a-z0-9_, ]*pixwith"
                                              r"[a-z0-9_, ]*\); install "
                                              r"the plugin"):
        await check_provider_contract(acme)


@pytest.mark.anyio
async def test_the_contract_needs_an_emulator_latency() -> None:
    with pytest.raises(ValueError, match="latency above 0"):
        await check_provider_contract(spec_of("wiro"), config=EmulatorConfig(latency=0))


# -- the helpers ------------------------------------------------------------------------------

def test_serve_emulator_checks_the_providers_a_test_relies_on() -> None:
    with pytest.raises(ConfigError, match="no installed provider 'acme'"):
        serve_emulator(providers=["acme"])
    with serve_emulator(EmulatorConfig(latency=0.5), providers=["wiro", "pixwith"]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.base_url("wiro") == f"{server.url}/wiro/v1"
        assert server.stats()["requests_total"] == 0


def test_emulator_settings_resolve_credentials_as_emulate_does() -> None:
    demo = emulator_settings("pixwith", env={})
    assert demo.base_url == f"{EMULATOR_URL}/pixwith/api"
    part = spec_of("pixwith").emulator
    assert part is not None
    assert demo.api_key == part.credentials["PIXWITH_API_KEY"]
    own: Mapping[str, str] = {"WIRO_API_KEY": "k1", "WIRO_API_SECRET": "s1"}
    wiro = emulator_settings("wiro", "http://127.0.0.1:8000/", env=own)
    assert (wiro.base_url, wiro.api_key, wiro.api_secret) == (
        "http://127.0.0.1:8000/wiro/v1", "k1", "s1")


@pytest.mark.anyio
async def test_an_in_process_emulator_on_a_manual_clock() -> None:
    clock = ManualClock(start=1_700_000_000)
    transport = emulator_transport(EmulatorConfig(latency=10), providers=["pixwith"],
                                   clock=clock)
    client = spec_of("pixwith").make_client(emulator_settings("pixwith"), transport=transport)
    try:
        task = await client.submit(make_job("pixwith/seedream-4.5", prompt="a held task"))
        clock.advance(9.9)
        assert (await client.poll(task.task_id)).state is TaskState.RUNNING
        clock.advance(0.1)
        done = await client.poll(task.task_id)
        assert done.state is TaskState.SUCCEEDED
        async with client.stream(done.outputs[0].url) as response:
            assert (await response.aread()).startswith(b"\x89PNG")
        async with httpx.AsyncClient(transport=transport) as control:
            stats = (await control.get(f"{EMULATOR_URL}/__stats")).json()
    finally:
        await client.aclose()
    assert stats["tasks_succeeded"] == 1
    assert stats["billed_credits"] == 6  # one image at Pixwith's price
