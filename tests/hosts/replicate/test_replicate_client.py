"""The Replicate client against the emulator, in process: the provider contract, a
prediction's whole life with the clock moved by hand, reference images (URLs, data URIs,
the Files API), cancel, and every error answer mapped to its type."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from replicate_support import API, emulated, make_job, png_file, token

from runner.emulator import EmulatorConfig, FaultSpec
from runner.emulator.replicate import FAILURE_TEXT, VERSIONS
from runner.errors import (
    AuthError,
    InsufficientBalance,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef
from runner.plugins import registry
from runner.providers.base import TaskState
from runner.providers.replicate import DATA_URI_MAX_BYTES, ReplicateProvider, retry_after_from
from runner.testing import check_provider_contract

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("over_socket", [False, True], ids=["in-process", "socket"])
async def test_replicate_meets_the_provider_contract(over_socket: bool) -> None:
    spec = registry().provider("replicate")
    result = await check_provider_contract(spec, over_socket=over_socket)
    assert result.models_checked == ("replicate/seedream-4.5", "replicate/seedream-4")
    assert result.outputs == 1
    assert result.cancel == "cancelled"
    assert result.polls == 2
    several = await check_provider_contract(
        spec, model="replicate/seedream-4",
        params={"sequential_image_generation": "auto", "max_images": 3})
    assert several.outputs == 3


async def test_a_prediction_starts_processes_and_succeeds_as_the_clock_moves() -> None:
    emu = emulated()
    job = make_job(params={"size": "custom", "width": 2560, "height": 1440,
                           "sequential_image_generation": "auto", "max_images": 2})
    submitted = await emu.client.submit(job)
    [create] = emu.transport.requests
    assert create.method == "POST"
    assert str(create.url) == f"{API}/models/bytedance/seedream-4.5/predictions"
    assert create.headers["authorization"] == f"Bearer {token()}"
    assert "prefer" not in create.headers  # never Prefer: wait (see the client's docstring)
    assert json.loads(create.content) == {"input": {
        "prompt": "a red tent at dusk", "size": "custom", "width": 2560, "height": 1440,
        "aspect_ratio": "match_input_image", "sequential_image_generation": "auto",
        "max_images": 2, "disable_safety_checker": False}}

    first = await emu.client.poll(submitted.task_id)
    assert (first.state, first.provider_status) == (TaskState.QUEUED, "starting")
    emu.clock.advance(1.5)  # past the first quarter of the 4 s latency
    second = await emu.client.poll(submitted.task_id)
    assert (second.state, second.provider_status) == (TaskState.RUNNING, "processing")
    emu.clock.advance(3.0)
    done = await emu.client.poll(submitted.task_id)
    assert (done.state, done.provider_status) == (TaskState.SUCCEEDED, "succeeded")
    assert len(done.outputs) == 2
    assert done.cost_usd is None  # Replicate reports no cost: the report estimates it
    assert done.elapsed_seconds == pytest.approx(3.0)  # predict_time: processing to end
    polls = [r for r in emu.transport.requests if r.method == "GET"]
    assert [str(r.url) for r in polls] == [f"{API}/predictions/{submitted.task_id}"] * 3
    for out in done.outputs:
        async with emu.client.stream(out.url) as response:
            assert (await response.aread()).startswith(b"\x89PNG")
    task = emu.state.tasks[("replicate", submitted.task_id)]
    assert (task.width, task.height, task.images) == (2560, 1440, 2)
    assert emu.state.snapshot()["billed_usd"] == pytest.approx(0.08)
    await emu.client.aclose()


async def test_the_prediction_object_has_every_documented_field() -> None:
    emu = emulated()
    created = await emu.raw("POST", "/models/bytedance/seedream-4/predictions",
                            headers={"Authorization": f"Bearer {token()}"},
                            json={"input": {"prompt": "a kite"}})
    assert created.status_code == 201
    doc = created.json()
    assert set(doc) >= {"id", "model", "version", "input", "logs", "output", "error", "status",
                        "created_at", "started_at", "completed_at", "urls", "metrics",
                        "data_removed"}
    assert doc["model"] == "bytedance/seedream-4"
    assert doc["version"] == VERSIONS["bytedance/seedream-4"]
    assert doc["input"] == {"prompt": "a kite"}  # as sent
    assert (doc["status"], doc["output"], doc["error"], doc["started_at"]) == (
        "starting", None, None, None)
    assert doc["urls"]["get"] == f"{API}/predictions/{doc['id']}"
    assert doc["urls"]["cancel"] == f"{API}/predictions/{doc['id']}/cancel"
    assert len(doc["id"]) == 26
    emu.clock.advance(10)
    got = await emu.raw("GET", f"/predictions/{doc['id']}",
                        headers={"Authorization": f"Bearer {token()}"})
    end = got.json()
    assert end["status"] == "succeeded"
    assert end["completed_at"] is not None
    assert end["started_at"] is not None
    assert end["metrics"]["predict_time"] == pytest.approx(3.0)
    assert [u.rsplit("/", 1)[-1] for u in end["output"]] == ["0.png"]


async def test_a_failed_prediction_carries_its_error_and_costs_nothing() -> None:
    emu = emulated()
    submitted = await emu.client.submit(make_job(prompt="a bridge emulator:fail"))
    emu.clock.advance(5)
    status = await emu.client.poll(submitted.task_id)
    assert (status.state, status.provider_status) == (TaskState.FAILED, "failed")
    assert status.error == FAILURE_TEXT
    assert status.cost_usd is None
    assert emu.state.snapshot()["tasks_billed"] == 0


async def test_cancel_follows_urls_cancel_and_the_prediction_shows_canceled() -> None:
    emu = emulated()
    submitted = await emu.client.submit(make_job())
    await emu.client.cancel(submitted.task_id, TaskState.QUEUED)
    cancel = emu.transport.requests[-1]
    assert (cancel.method, str(cancel.url)) == (
        "POST", f"{API}/predictions/{submitted.task_id}/cancel")
    emu.clock.advance(10)
    status = await emu.client.poll(submitted.task_id)
    assert (status.state, status.provider_status) == (TaskState.CANCELLED, "canceled")
    assert emu.state.snapshot()["tasks_cancelled"] == 1
    assert emu.state.snapshot()["tasks_billed"] == 0
    sent = len(emu.transport.requests)
    await emu.client.cancel(submitted.task_id, TaskState.CANCELLED)  # ended: nothing sent
    assert len(emu.transport.requests) == sent


async def test_a_resumed_client_derives_the_documented_urls_from_the_id() -> None:
    emu = emulated()
    submitted = await emu.client.submit(make_job())
    later = emu.new_client()  # a new process: it knows the id alone
    emu.clock.advance(10)
    status = await later.poll(submitted.task_id)
    assert status.state is TaskState.SUCCEEDED
    assert str(emu.transport.requests[-1].url) == f"{API}/predictions/{submitted.task_id}"
    assert status.cost_usd is None


async def test_urls_off_the_api_origin_are_never_followed_with_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(201, json={
                "id": "abc", "status": "starting", "model": "bytedance/seedream-4.5",
                "urls": {"get": "https://elsewhere.example/v1/predictions/abc",
                         "cancel": "https://api.replicate.test/v1/predictions/abc/cancel"}})
        return httpx.Response(200, json={"id": "abc", "status": "processing"})

    client = ReplicateProvider(base_url="https://api.replicate.test/v1", api_token="r8_x",
                               transport=httpx.MockTransport(handler))
    await client.submit(make_job())
    await client.poll("abc")
    await client.cancel("abc", TaskState.RUNNING)
    assert [str(r.url) for r in seen[1:]] == [
        "https://api.replicate.test/v1/predictions/abc",
        "https://api.replicate.test/v1/predictions/abc/cancel"]


async def test_reference_images_urls_as_they_are_local_files_inline_or_uploaded(
        tmp_path: Path) -> None:
    emu = emulated()
    small = png_file(tmp_path / "small.png")
    large = png_file(tmp_path / "large.png", (700, 700), noise=True)
    assert (tmp_path / "small.png").stat().st_size <= DATA_URI_MAX_BYTES
    assert (tmp_path / "large.png").stat().st_size > DATA_URI_MAX_BYTES
    url = ImageRef(ref="https://example.com/ref.jpg", url="https://example.com/ref.jpg")
    submitted = await emu.client.submit(make_job(images=(url, small, large)))
    upload, create = emu.transport.requests
    assert (upload.method, str(upload.url)) == ("POST", f"{API}/files")
    assert b'name="content"; filename="large.png"' in upload.content
    sent = json.loads(create.content)["input"]["image_input"]
    assert sent[0] == "https://example.com/ref.jpg"
    assert sent[1] == "data:image/png;base64," + base64.b64encode(
        (tmp_path / "small.png").read_bytes()).decode()
    assert sent[2].startswith(f"{API}/files/")
    task = emu.state.tasks[("replicate", submitted.task_id)]
    assert task.inputs == ("https://example.com/ref.jpg", f"sha256:{small.sha256}",
                           f"sha256:{large.sha256}")
    assert emu.state.snapshot()["uploads"] == 1


async def test_an_unreadable_local_image_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    emu = emulated()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(JobRejected, match="not a recognised image"):
        await emu.client.submit(make_job(images=(ImageRef(ref="notes.png", path=str(text)),)))
    assert emu.transport.requests == []


async def test_outputs_are_gone_after_the_retention_period() -> None:
    emu = emulated(EmulatorConfig(latency=4.0, seed=1,
                                  options={"replicate": {"retention_seconds": 60.0}}))
    submitted = await emu.client.submit(make_job())
    emu.clock.advance(5)
    done = await emu.client.poll(submitted.task_id)
    assert done.state is TaskState.SUCCEEDED
    emu.clock.advance(60)
    late = await emu.client.poll(submitted.task_id)
    assert late.state is TaskState.FAILED
    assert "data_removed" in (late.error or "")
    with pytest.raises(JobRejected):
        async with emu.client.stream(done.outputs[0].url):
            pass
    assert emu.state.snapshot()["paid_outputs_unfetched"] == 1


# -- errors ----------------------------------------------------------------------------------

async def test_a_wrong_token_is_refused_everywhere_in_replicates_words() -> None:
    emu = emulated()
    submitted = await emu.client.submit(make_job())
    wrong = emu.new_client(token="r8_wrong")
    with pytest.raises(AuthError, match="You did not pass a valid authentication token"):
        await wrong.submit(make_job())
    with pytest.raises(AuthError):
        await wrong.poll(submitted.task_id)
    with pytest.raises(AuthError):
        await wrong.cancel(submitted.task_id, TaskState.QUEUED)
    answer = await emu.raw("GET", f"/predictions/{submitted.task_id}")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {"title": "Unauthenticated", "status": 401,
                             "detail": "You did not pass a valid authentication token"}


async def test_an_unknown_prediction_is_refused() -> None:
    emu = emulated()
    with pytest.raises(JobRejected, match="no prediction 'nosuchprediction'"):
        await emu.client.poll("nosuchprediction")


async def test_an_invalid_input_is_a_422_in_replicates_shape() -> None:
    emu = emulated()
    bad = make_job(params={"size": "8K"})  # past seedbatch's own check: the host's answer
    with pytest.raises(JobRejected, match=r"- input.size: size must be one of the following: "
                                          r'"2K", "4K", "custom"'):
        await emu.client.submit(bad)
    answer = await emu.raw("POST", "/models/bytedance/seedream-4/predictions",
                           headers={"Authorization": f"Bearer {token()}"},
                           json={"input": {"width": 99, "max_images": "3", "seed": 1},
                                 "model": "x"})
    assert answer.status_code == 422
    doc = answer.json()
    assert doc["title"] == "Input validation failed"
    assert doc["status"] == 422
    assert doc["invalid_fields"] == [
        {"type": "additional_property_not_allowed", "field": "",
         "description": "Additional property model is not allowed"},
        {"type": "required", "field": "input", "description": "prompt is required"},
        {"type": "number_gte", "field": "input.width",
         "description": "Must be greater than or equal to 1024"},
        {"type": "invalid_type", "field": "input.max_images",
         "description": "Invalid type. Expected: integer, given: string"},
        {"type": "additional_property_not_allowed", "field": "input",
         "description": "Additional property seed is not allowed"},
    ]
    assert doc["detail"].splitlines()[0] == "- Additional property model is not allowed"
    assert "- input.width: Must be greater than or equal to 1024" in doc["detail"]
    assert emu.state.snapshot()["tasks_created_total"] == 0


async def test_references_plus_max_images_over_15_are_refused_by_the_host() -> None:
    emu = emulated()
    urls = [f"https://example.com/{i}.png" for i in range(5)]
    answer = await emu.raw("POST", "/models/bytedance/seedream-4.5/predictions",
                           headers={"Authorization": f"Bearer {token()}"},
                           json={"input": {"prompt": "a set", "image_input": urls,
                                           "sequential_image_generation": "auto",
                                           "max_images": 11}})
    assert answer.status_code == 422
    [field] = answer.json()["invalid_fields"]
    assert field["field"] == "input.max_images"


async def test_no_credit_is_insufficient_balance() -> None:
    emu = emulated(EmulatorConfig(latency=4.0, options={"replicate": {"credit_usd": 0.0}}))
    with pytest.raises(InsufficientBalance, match="insufficient credit"):
        await emu.client.submit(make_job())


async def test_429_carries_retry_after_and_replicates_words() -> None:
    emu = emulated(EmulatorConfig(latency=4.0, seed=3, faults=FaultSpec.parse("429=1")))
    with pytest.raises(RateLimited) as caught:
        await emu.client.submit(make_job())
    assert caught.value.retry_after is not None
    assert "Request was throttled. Expected available in" in caught.value.message
    answer = await emu.raw("GET", "/predictions/x", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 429
    assert answer.json()["title"] == "Request was throttled"
    seconds = int(answer.headers["retry-after"])
    unit = "second" if seconds == 1 else "seconds"
    assert answer.json()["detail"] == \
        f"Request was throttled. Expected available in {seconds} {unit}."


@pytest.mark.parametrize(("detail", "wait"), [
    ("Request was throttled. Expected available in 7 seconds.", 7.0),
    ("Request was throttled. Expected available in 1 second.", 1.0),
    ("Request was throttled. Your rate limit resets in ~30s.", 30.0),
    ("Request was throttled.", None)])
async def test_without_retry_after_the_wait_is_read_from_the_detail(
        detail: str, wait: float | None) -> None:
    assert retry_after_from(detail) == wait

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"detail": detail})

    client = ReplicateProvider(base_url="https://api.replicate.test/v1", api_token="r8_x",
                               transport=httpx.MockTransport(handler))
    with pytest.raises(RateLimited) as caught:
        await client.submit(make_job())
    assert caught.value.retry_after == wait


async def test_server_errors_create_nothing_and_may_be_retried() -> None:
    emu = emulated(EmulatorConfig(latency=4.0, seed=3, faults=FaultSpec.parse("5xx=1")))
    with pytest.raises(ServerError):
        await emu.client.submit(make_job())
    assert emu.state.snapshot()["tasks_created_total"] == 0


async def test_a_dropped_create_is_an_unknown_outcome_and_a_dropped_poll_is_not() -> None:
    emu = emulated(EmulatorConfig(latency=4.0, seed=3, faults=FaultSpec.parse("drop=1")))
    with pytest.raises(UnknownOutcome, match="a task may have been created"):
        await emu.client.submit(make_job())
    with pytest.raises(ServerError, match="the answer was lost"):
        await emu.client.poll("anything")


async def test_a_gateway_timeout_on_create_is_an_unknown_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(504, text="<html>504 Gateway Time-out</html>")

    client = ReplicateProvider(base_url="https://api.replicate.test/v1", api_token="r8_x",
                               transport=httpx.MockTransport(handler))
    with pytest.raises(UnknownOutcome):
        await client.submit(make_job())
    with pytest.raises(ServerError):
        await client.poll("abc")


async def test_the_token_never_appears_in_an_error() -> None:
    secret = "r8_secret_token_value"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": f"bad token {secret} echoed"})

    client = ReplicateProvider(base_url="https://api.replicate.test/v1", api_token=secret,
                               transport=httpx.MockTransport(handler))
    with pytest.raises(JobRejected) as caught:
        await client.submit(make_job())
    assert secret not in str(caught.value)
