"""The provider contract every plugin's tests call (``runner.testing``), met by fal.ai for
both models, in process and over a loopback socket; and the emulator's index naming fal's
prefix."""

from __future__ import annotations

import httpx
import pytest
from fal_support import V4, V45

from runner.emulator import EmulatorConfig
from runner.plugins import registry
from runner.testing import check_provider_contract, serve_emulator

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("over_socket", [False, True], ids=["in-process", "socket"])
@pytest.mark.parametrize("model", [V4, V45])
async def test_fal_meets_the_provider_contract(model: str, over_socket: bool) -> None:
    spec = registry().provider("fal")
    result = await check_provider_contract(spec, model=model, over_socket=over_socket)
    assert result.model == model
    assert result.models_checked == (V4, V45)
    assert result.cancel == "cancelled"  # a queued request is removed
    assert result.outputs == 1
    assert result.polls == 2
    assert result.task_id.startswith("fal-ai/bytedance/requests/")


async def test_the_contract_holds_for_several_images_per_job() -> None:
    result = await check_provider_contract(registry().provider("fal"),
                                           params={"num_images": 2, "max_images": 2})
    assert result.outputs == 4
    assert len(result.output_bytes) == 4


def test_the_emulators_index_names_the_fal_prefix() -> None:
    with serve_emulator(EmulatorConfig(latency=0.1), ["fal"]) as server:
        index = httpx.get(f"{server.url}/__", timeout=10).json()
        assert server.base_url("fal") == f"{server.url}/fal"
    assert "/fal" in str(index)
