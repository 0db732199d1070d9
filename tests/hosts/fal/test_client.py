"""The fal client against the fal emulator in process, the clock moved by hand: a request's
whole life, reference images, failures, cancels, refused credentials — and the client
alone against fal's own answers for what the emulator does not do on purpose (a gateway's
504, a lost answer).

No assertion depends on timing: a request is queued, running or complete because the test
moved the emulator's clock there (``ManualClock``)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from fal_support import BASE, LATENCY, V4, V45, fal_client, make_job, task_of

from runner.errors import (
    AuthError,
    CancelUnsupported,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef
from runner.providers.base import TaskState
from runner.providers.fal import (
    FalProvider,
    QueueRequest,
    decode_task_id,
    encode_task_id,
)
from runner.testing import ManualClock

pytestmark = pytest.mark.anyio

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


# -- task ids ---------------------------------------------------------------------------------

def test_a_documented_answer_becomes_its_readable_relative_response_url() -> None:
    rid = "80e732af-660e-45cd-bd63-580e4f2a94cc"
    response = f"https://queue.fal.run/fal-ai/bytedance/requests/{rid}"
    request = QueueRequest(rid, response + "/status", response, response + "/cancel")
    task_id = encode_task_id("https://queue.fal.run", request)
    assert task_id == f"fal-ai/bytedance/requests/{rid}"
    # after a restart, against another base (fal's backup host), the same URLs there
    assert decode_task_id("https://queue.falrun.com/", task_id) == QueueRequest(
        rid, f"https://queue.falrun.com/fal-ai/bytedance/requests/{rid}/status",
        f"https://queue.falrun.com/fal-ai/bytedance/requests/{rid}",
        f"https://queue.falrun.com/fal-ai/bytedance/requests/{rid}/cancel")


def test_any_other_answer_is_kept_whole_and_decodes_exactly() -> None:
    request = QueueRequest("r1", "https://queue.fal.run/a/b/requests/r1/status?x=1",
                           "https://elsewhere.test/results/r1",
                           "https://queue.fal.run/a/b/requests/r1/cancel")
    task_id = encode_task_id("https://queue.fal.run", request)
    assert json.loads(task_id) == {"request_id": "r1",
                                   "status_url": "a/b/requests/r1/status?x=1",
                                   "response_url": "https://elsewhere.test/results/r1",
                                   "cancel_url": "a/b/requests/r1/cancel"}
    assert decode_task_id("https://queue.fal.run", task_id) == request


@pytest.mark.parametrize("task_id", ["", "https://queue.fal.run/x", "{not json", '{"a": 1}'])
def test_an_id_this_client_never_made_is_refused(task_id: str) -> None:
    with pytest.raises(JobRejected):
        decode_task_id(BASE, task_id)


# -- a request's life -------------------------------------------------------------------------

async def test_a_request_goes_queued_running_completed_and_is_priced_per_image() -> None:
    clock = ManualClock()
    async with fal_client(clock) as (client, state):
        job = make_job(V4, params={"num_images": 2, "max_images": 2, "seed": 7})
        submitted = await client.submit(job)
        task = task_of(state, submitted.task_id)
        assert submitted.task_id == f"fal-ai/bytedance/requests/{task.id}"
        assert task.endpoint == "fal-ai/bytedance/seedream/v4/text-to-image"
        assert task.params["enhance_prompt_mode"] == "standard"
        assert (await client.poll(submitted.task_id)).state is TaskState.QUEUED
        clock.advance(LATENCY / 2)
        running = await client.poll(submitted.task_id)
        assert (running.state, running.provider_status) == (TaskState.RUNNING, "IN_PROGRESS")
        clock.advance(LATENCY)
        done = await client.poll(submitted.task_id)
        assert done.state is TaskState.SUCCEEDED
        assert len(done.outputs) == 4  # num_images × max_images
        assert done.cost_usd is None  # fal reports no cost: the report estimates it
        assert done.elapsed_seconds == pytest.approx(LATENCY * 0.75)
        async with client.stream(done.outputs[0].url) as response:
            data = b"".join([c async for c in response.aiter_bytes()])
        assert data[:8] == PNG[:8]
        assert len(data) == done.outputs[0].size
        assert "Authorization" not in response.request.headers  # downloads carry no key
        assert client.stats()["submit"] == 1


async def test_a_resumed_client_follows_the_request_it_never_submitted() -> None:
    clock = ManualClock()
    async with fal_client(clock) as (first, _state):
        submitted = await first.submit(make_job(V45))
        # a new process: nothing but the task id survives
        fresh = FalProvider(base_url=BASE, api_key=first._api_key,
                            transport=first.client._transport)
        clock.advance(LATENCY * 2)
        done = await fresh.poll(submitted.task_id)
        assert done.state is TaskState.SUCCEEDED
        await fresh.aclose()


async def test_reference_images_go_to_the_edit_endpoint_as_urls_and_data_uris(
        tmp_path: Path) -> None:
    local = tmp_path / "ref.png"
    local.write_bytes(PNG)
    refs = (ImageRef(ref="https://img.test/a.png", url="https://img.test/a.png"),
            ImageRef(ref="ref.png", path=str(local), sha256=hashlib.sha256(PNG).hexdigest()))
    async with fal_client(ManualClock()) as (client, state):
        submitted = await client.submit(make_job(V45, images=refs))
        task = task_of(state, submitted.task_id)
        assert task.endpoint == "fal-ai/bytedance/seedream/v4.5/edit"
        digest = hashlib.sha256(PNG).hexdigest()
        assert task.inputs == ("https://img.test/a.png", f"sha256:{digest}")


async def test_a_local_file_that_is_no_image_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    async with fal_client(ManualClock()) as (client, state):
        with pytest.raises(JobRejected, match="not a recognised image"):
            await client.submit(make_job(V4, images=(ImageRef(ref="notes.txt",
                                                              path=str(text)),)))
        assert client.stats()["submit"] == 0
        assert state.stats.created == {}


async def test_a_failed_generation_fails_with_fals_reason_and_costs_nothing() -> None:
    clock = ManualClock()
    async with fal_client(clock) as (client, state):
        submitted = await client.submit(make_job(V4, prompt="a boat emulator:fail"))
        clock.advance(LATENCY * 2)
        status = await client.poll(submitted.task_id)
        assert status.state is TaskState.FAILED
        assert status.provider_status == \
            "COMPLETED error_type=downstream_service_error HTTP 500"
        assert status.error is not None
        assert status.error.startswith("The image could not be generated")
        assert status.error.endswith("(downstream_service_error)")
        assert status.cost_usd is None
        assert status.outputs == ()
        assert state.stats.billed_tasks == 0


async def test_an_input_fal_refuses_is_a_request_that_fails_with_the_422_detail() -> None:
    async with fal_client(ManualClock()) as (client, state):
        job = make_job(V4, params={"num_images": 9})  # past seedbatch's own check
        submitted = await client.submit(job)
        status = await client.poll(submitted.task_id)
        assert status.state is TaskState.FAILED
        assert status.error == "num_images: Input should be less than or equal to 6 " \
                               "(less_than_equal)"
        assert state.stats.created == {}  # never reached a model
        assert state.stats.rejections["validation"] == 1


async def test_cancel_removes_a_queued_request() -> None:
    clock = ManualClock()
    async with fal_client(clock) as (client, state):
        submitted = await client.submit(make_job(V4))
        await client.cancel(submitted.task_id, TaskState.QUEUED)
        assert (await client.poll(submitted.task_id)).state is TaskState.CANCELLED
        clock.advance(LATENCY * 2)
        after = await client.poll(submitted.task_id)
        assert (after.state, after.provider_status) == (
            TaskState.CANCELLED, "COMPLETED error_type=client_cancelled")
        assert state.stats.billed_tasks == 0


async def test_a_running_request_runs_on_after_a_cancel_and_is_delivered() -> None:
    clock = ManualClock()
    async with fal_client(clock) as (client, _state):
        submitted = await client.submit(make_job(V4))
        clock.advance(LATENCY / 2)
        with pytest.raises(CancelUnsupported, match="followed to its end"):
            await client.cancel(submitted.task_id, TaskState.RUNNING)
        clock.advance(LATENCY)
        done = await client.poll(submitted.task_id)
        assert done.state is TaskState.SUCCEEDED
        assert len(done.outputs) == 1
        # a cancel that arrives after the end is refused; one for an ended task is not sent
        with pytest.raises(JobRejected, match="already completed"):
            await client.cancel(submitted.task_id, TaskState.RUNNING)
        sent = client.stats()["cancel"]
        await client.cancel(submitted.task_id, TaskState.SUCCEEDED)
        assert client.stats()["cancel"] == sent


async def test_wrong_credentials_are_an_auth_error_everywhere() -> None:
    async with fal_client(ManualClock()) as (good, state):
        submitted = await good.submit(make_job(V4))
        bad = FalProvider(base_url=BASE, api_key="someone:else",
                          transport=good.client._transport)
        with pytest.raises(AuthError, match="No user found for Key ID and Secret"):
            await bad.submit(make_job(V4))
        with pytest.raises(AuthError):
            await bad.poll(submitted.task_id)
        with pytest.raises(AuthError):
            await bad.cancel(submitted.task_id, TaskState.QUEUED)
        await bad.aclose()
        assert state.stats.rejections["auth"] == 3


async def test_an_unknown_request_is_refused() -> None:
    async with fal_client(ManualClock()) as (client, _):
        with pytest.raises(JobRejected, match="Request not found"):
            await client.poll("fal-ai/bytedance/requests/00000000-0000-4000-8000-000000000000")


# -- fal's answers the emulator does not give on purpose --------------------------------------

def answering(handler: httpx.MockTransport) -> FalProvider:
    return FalProvider(base_url="https://queue.fal.test", api_key="id:secret",
                       transport=handler)


@pytest.mark.parametrize(("answer", "error"), [
    (httpx.Response(504, text="<html>gateway timeout</html>"), UnknownOutcome),
    (httpx.Response(307, headers={"Location": "https://elsewhere.test/"}), UnknownOutcome),
    (httpx.Response(200, json={"request_id": "r1"}), UnknownOutcome),
    (httpx.Response(200, text="queued"), UnknownOutcome),
    (httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "3"}),
     RateLimited),
    (httpx.Response(503, json={"detail": "Service Unavailable"}), ServerError),
    (httpx.Response(403, json={"detail": "Forbidden"}), AuthError),
    (httpx.Response(404, json={"detail": "Application not found"}), JobRejected),
])
async def test_each_submit_answer_says_whether_a_request_may_exist(
        answer: httpx.Response, error: type[Exception]) -> None:
    client = answering(httpx.MockTransport(lambda r: answer))
    with pytest.raises(error) as caught:
        await client.submit(make_job(V4))
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 3
    await client.aclose()


async def test_a_submit_whose_answer_is_lost_is_an_unknown_outcome() -> None:
    def hang_up(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    client = answering(httpx.MockTransport(hang_up))
    with pytest.raises(UnknownOutcome, match="a task may have been created"):
        await client.submit(make_job(V4))
    with pytest.raises(ServerError):  # a poll is safe to repeat
        await client.poll("fal-ai/bytedance/requests/r1")
    await client.aclose()


async def test_the_submitted_body_is_the_input_with_image_urls_last(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def queue(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        url = "https://queue.fal.test/fal-ai/bytedance/requests/r1"
        return httpx.Response(200, json={"request_id": "r1", "response_url": url,
                                         "status_url": url + "/status",
                                         "cancel_url": url + "/cancel", "queue_position": 0})

    local = tmp_path / "a.png"
    local.write_bytes(PNG)
    client = answering(httpx.MockTransport(queue))
    job = make_job(V4, images=(ImageRef(ref="a.png", path=str(local)),))
    result = await client.submit(job)
    assert result.task_id == "fal-ai/bytedance/requests/r1"
    request = seen[0]
    assert str(request.url) == "https://queue.fal.test/fal-ai/bytedance/seedream/v4/edit"
    assert request.headers["Authorization"] == "Key id:secret"
    body = json.loads(request.content)
    assert body == {"prompt": "a red tent at dusk", **job.params,
                    "image_urls": [f"data:image/png;base64,{base64.b64encode(PNG).decode()}"]}
    await client.aclose()
