"""Demo Images' emulator, in process (httpx.ASGITransport over create_app) on a clock moved by
hand: the README's answers, task progress, billing, outputs, the account's limits, the
emulator's shared faults — and the provider contract every seedbatch host meets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from seedbatch_demo import DEMO_KEY, SPEC
from seedbatch_demo.emulator import QUEUED_SHARE

from runner.emulator import EmulatorConfig, create_app
from runner.errors import RateLimited, ServerError
from runner.providers.base import TaskState
from runner.testing import (
    EMULATOR_URL,
    ManualClock,
    check_provider_contract,
    emulator_settings,
)

from .conftest import example, make_job

pytestmark = pytest.mark.anyio

LATENCY = 10.0
AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


class Emulator:
    def __init__(self, **config: Any) -> None:
        config.setdefault("latency", LATENCY)
        self.clock = ManualClock()
        self.transport = httpx.ASGITransport(app=create_app(EmulatorConfig(**config),
                                                            clock=self.clock))
        self.http = httpx.AsyncClient(transport=self.transport, base_url=EMULATOR_URL)

    async def create(self, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        doc = dict(example("create-request")) if body is None else body
        doc.update(kw)
        return await self.http.post("/demo/v1/images", json=doc, headers=AUTH)

    async def image(self, image_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/demo/v1/images/{image_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    async def account(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.http.get("/demo/v1/__account")).json()
        return doc


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    emulator = Emulator()
    yield emulator
    await emulator.http.aclose()


def shape(doc: Any) -> Any:
    """The keys of a JSON document, all the way down (values aside)."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(v) for v in doc[:1]]
    return None


async def test_a_job_is_queued_running_then_succeeded_and_billed(emu: Emulator) -> None:
    created = await emu.create()
    assert created.status_code == 202
    doc = created.json()
    assert shape(doc) == shape(example("create-response"))
    assert (doc["status"], doc["model"], doc["eta_seconds"]) == ("queued", "pattern-v1", LATENCY)
    image_id = doc["id"]
    assert image_id.startswith("img_")

    assert (await emu.image(image_id))["status"] == "queued"
    emu.clock.advance(LATENCY * QUEUED_SHARE)
    running = await emu.image(image_id)
    assert shape(running) == shape(example("image-running"))
    assert (running["status"], running["outputs"], running["cost_usd"]) == ("running", [], None)
    emu.clock.advance(LATENCY * (1 - QUEUED_SHARE))
    done = await emu.image(image_id)
    assert shape(done) == shape(example("image-succeeded"))
    assert done["status"] == "succeeded"
    assert done["cost_usd"] == pytest.approx(0.004)  # n = 2 at $0.002, as the README says
    assert [o["url"] for o in done["outputs"]] == [
        f"{EMULATOR_URL}/files/demo/{image_id}/0.png",
        f"{EMULATOR_URL}/files/demo/{image_id}/1.png"]
    for output in done["outputs"]:
        png = await emu.http.get(output["url"])  # public: no key
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    account = await emu.account()
    assert account["billed_usd"] == pytest.approx(0.004)
    assert account["balance_usd"] == pytest.approx(100 - 0.004)
    assert account["images"] == {"created": 1, "succeeded": 1, "failed": 0, "canceled": 0}
    assert account["polls"] == 3


async def test_errors_are_the_readme_examples(emu: Emulator) -> None:
    no_key = await emu.http.post("/demo/v1/images", json=example("create-request"))
    assert (no_key.status_code, no_key.json()) == (401, example("error-401"))
    wrong = await emu.http.get("/demo/v1/images/img_x", headers={"Authorization": "Bearer no"})
    assert (wrong.status_code, wrong.json()) == (401, example("error-401"))
    too_wide = await emu.create(width=4096)
    assert (too_wide.status_code, too_wide.json()) == (400, example("error-400"))
    await emu.http.post("/demo/v1/__account", json={"balance_usd": 0.001})
    broke = await emu.create()
    assert (broke.status_code, broke.json()) == (402, example("error-402"))
    assert (await emu.account())["images"]["created"] == 0


@pytest.mark.parametrize(("change", "param", "words"), [
    ({"model": "pattern-v9"}, "model", "model must be one of: pattern-v1, pattern-hd-v1"),
    ({"prompt": "  "}, "prompt", "prompt is required"),
    ({"style": "bold"}, "style", "has no parameter 'style'"),
    ({"n": 5}, "n", "5 is greater than the maximum of 4"),
    ({"width": 2048, "height": 2048, "n": 2}, "n", "8,388,608 pixels"),
    ({"seed": "seven"}, "seed", "'seven' is not of type"),
])
async def test_validation_names_the_parameter(emu: Emulator, change: dict[str, Any], param: str,
                                              words: str) -> None:
    response = await emu.create(**change)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", param)
    assert words in error["message"]


async def test_defaults_apply_to_what_is_left_out(emu: Emulator) -> None:
    created = await emu.create({"model": "pattern-hd-v1", "prompt": "a mural"})
    assert created.status_code == 202
    emu.clock.advance(LATENCY)
    done = await emu.image(created.json()["id"])
    assert (len(done["outputs"]), done["cost_usd"]) == (1, pytest.approx(0.008))


async def test_cancel_stops_a_job_and_an_ended_one_answers_409(emu: Emulator) -> None:
    first = (await emu.create()).json()["id"]
    canceled = await emu.http.post(f"/demo/v1/images/{first}/cancel", headers=AUTH)
    assert canceled.status_code == 200
    assert shape(canceled.json()) == shape(example("image-canceled"))
    assert (canceled.json()["status"], canceled.json()["cost_usd"]) == ("canceled", 0.0)
    second = (await emu.create()).json()["id"]
    emu.clock.advance(LATENCY)
    assert (await emu.image(first))["status"] == "canceled"  # stays canceled, never billed
    late = await emu.http.post(f"/demo/v1/images/{second}/cancel", headers=AUTH)
    expected = example("error-409")
    expected["error"]["message"] = expected["error"]["message"].replace(
        "img_5f2c0e9a41d34b7f", second)
    assert (late.status_code, late.json()) == (409, expected)
    missing = await emu.http.post("/demo/v1/images/img_none/cancel", headers=AUTH)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    account = await emu.account()
    assert account["images"] == {"created": 2, "succeeded": 1, "failed": 0, "canceled": 1}
    assert account["billed_usd"] == pytest.approx(0.004)


async def test_the_fail_marker_fails_a_job_without_billing(emu: Emulator) -> None:
    image_id = (await emu.create(prompt="tiles emulator:fail")).json()["id"]
    emu.clock.advance(LATENCY)
    failed = await emu.image(image_id)
    assert shape(failed) == shape(example("image-failed"))
    assert (failed["status"], failed["cost_usd"], failed["error"]["code"]) == (
        "failed", 0.0, "generation_failed")
    assert (await emu.account())["billed_usd"] == 0


async def test_the_account_holds_at_most_concurrency_jobs_in_flight(emu: Emulator) -> None:
    for _ in range(8):
        assert (await emu.create()).status_code == 202
    busy = await emu.create()
    assert (busy.status_code, busy.json()) == (429, example("error-429"))
    assert busy.headers["retry-after"] == "1"
    emu.clock.advance(LATENCY)  # the eight end: slots free again
    assert (await emu.create()).status_code == 202


async def test_a_reset_starts_the_account_afresh(emu: Emulator) -> None:
    image_id = (await emu.create()).json()["id"]
    await emu.http.post("/demo/v1/__account", json={"balance_usd": 5})
    assert (await emu.http.post("/__reset")).status_code == 200
    gone = await emu.http.get(f"/demo/v1/images/{image_id}", headers=AUTH)
    assert gone.status_code == 404
    account = await emu.account()
    assert (account["balance_usd"], account["images"]["created"]) == (100, 0)


async def test_the_key_is_demo_api_key_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_API_KEY", "sk-own-key")
    emulator = Emulator()
    try:
        assert (await emulator.create()).status_code == 401
        ok = await emulator.http.post("/demo/v1/images", json=example("create-request"),
                                      headers={"Authorization": "Bearer sk-own-key"})
        assert ok.status_code == 202
    finally:
        await emulator.http.aclose()


async def test_the_shared_faults_reach_the_demo_api() -> None:
    emulator = Emulator(faults="429=1")
    client = SPEC.make_client(emulator_settings("demo"), transport=emulator.transport)
    try:
        with pytest.raises(RateLimited) as limited:
            await client.submit(make_job())
        assert limited.value.http_status == 429
        await emulator.http.post("/__faults", json={"faults": "5xx=1"})
        with pytest.raises(ServerError):
            await client.submit(make_job())
        stats = (await emulator.http.get("/__stats")).json()
        account = await emulator.account()
    finally:
        await client.aclose()
        await emulator.http.aclose()
    assert stats["requests_by_endpoint"] == {"POST /demo/v1/images": 2}
    assert (stats["faults"]["429"], stats["faults"]["5xx"]) == (1, 1)
    assert account["images"]["created"] == 0  # refused before the handler ran: nothing made


async def test_a_truncated_download_is_a_transient_error() -> None:
    emulator = Emulator(faults="truncate=1")
    client = SPEC.make_client(emulator_settings("demo"), transport=emulator.transport)
    try:
        task = await client.submit(make_job())
        emulator.clock.advance(LATENCY)
        done = await client.poll(task.task_id)
        assert done.state is TaskState.SUCCEEDED
        with pytest.raises(ServerError, match="download"):
            async with client.stream(done.outputs[0].url) as response:
                await response.aread()
    finally:
        await client.aclose()
        await emulator.http.aclose()


# -- the contract every host meets (runner.testing) ----------------------------------------------

@pytest.mark.parametrize("over_socket", [False, True], ids=["in-process", "socket"])
async def test_the_demo_provider_meets_the_provider_contract(over_socket: bool) -> None:
    result = await check_provider_contract(SPEC, over_socket=over_socket)
    assert (result.provider, result.model, result.cancel) == ("demo", "demo/pattern-v1",
                                                              "cancelled")
    assert result.models_checked == ("demo/pattern-v1", "demo/pattern-hd-v1")
    assert result.outputs == 1
    assert result.polls == 2


async def test_the_contract_with_several_outputs() -> None:
    result = await check_provider_contract(SPEC, model="demo/pattern-hd-v1",
                                           params={"n": 2, "width": 1024, "height": 1024})
    assert result.outputs == 2
    assert len(result.output_bytes) == 2
