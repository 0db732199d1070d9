"""DemoProvider over a fake network (httpx.MockTransport): what it sends, and what each kind
of failure becomes — above all, which ones mean "nothing was created" and which "unknown"."""

from __future__ import annotations

import json

import httpx
import pytest

from runner.errors import (
    ConnectFailed,
    JobRejected,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef
from runner.providers.base import Provider, TaskState

from .conftest import BASE, KEY, client_for, example, make_job

pytestmark = pytest.mark.anyio


class Wire:
    """Answers in turn, and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_it_is_a_provider() -> None:
    client = client_for(Wire())
    try:
        assert isinstance(client, Provider)
        assert client.name == "demo"
    finally:
        await client.aclose()


async def test_submit_sends_the_documented_request() -> None:
    wire = Wire(httpx.Response(202, json=example("create-response")))
    client = client_for(wire)
    try:
        got = await client.submit(make_job(params={"width": 1024, "height": 768, "n": 2,
                                                   "seed": 7}))
    finally:
        await client.aclose()
    assert got.task_id == "img_5f2c0e9a41d34b7f"
    (sent,) = wire.requests
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/images")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == example("create-request")
    assert client.stats()["submit"] == 1


async def test_poll_and_cancel_address_the_image_job() -> None:
    wire = Wire(httpx.Response(200, json=example("image-succeeded")),
                httpx.Response(200, json=example("image-canceled")))
    client = client_for(wire)
    try:
        status = await client.poll("img_5f2c0e9a41d34b7f")
        await client.cancel("img/odd id", TaskState.RUNNING)
        await client.cancel("img_done", TaskState.SUCCEEDED)  # ended: nothing is sent
    finally:
        await client.aclose()
    assert status.state is TaskState.SUCCEEDED
    assert [(r.method, str(r.url)) for r in wire.requests] == [
        ("GET", f"{BASE}/images/img_5f2c0e9a41d34b7f"),
        ("POST", f"{BASE}/images/img%2Fodd%20id/cancel")]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in wire.requests)


async def test_reference_images_are_refused_before_anything_is_sent() -> None:
    wire = Wire()
    client = client_for(wire)
    try:
        with pytest.raises(JobRejected, match="text-to-image only"):
            await client.submit(make_job(images=(ImageRef(ref="a.png", url="https://x/a.png"),)))
    finally:
        await client.aclose()
    assert wire.requests == []


@pytest.mark.parametrize("lost", [
    httpx.ReadTimeout("read timed out"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ReadError("connection reset by peer"),
], ids=type)
async def test_a_submit_whose_answer_is_lost_is_an_unknown_outcome(lost: Exception) -> None:
    client = client_for(Wire(lost))
    try:
        with pytest.raises(UnknownOutcome, match="may have been created"):
            await client.submit(make_job())
    finally:
        await client.aclose()


async def test_a_submit_that_never_left_is_a_connect_failure() -> None:
    client = client_for(Wire(httpx.ConnectError("connection refused")))
    try:
        with pytest.raises(ConnectFailed, match="nothing was sent"):
            await client.submit(make_job())
    finally:
        await client.aclose()


async def test_ambiguous_answers_to_submit_are_unknown_outcomes() -> None:
    client = client_for(Wire(httpx.Response(504, text="Gateway Time-out"),
                             httpx.Response(202, text="accepted"),
                             httpx.Response(202, json={"status": "queued"})))
    try:
        for _ in range(3):
            with pytest.raises(UnknownOutcome):
                await client.submit(make_job())
    finally:
        await client.aclose()


async def test_lost_or_unreadable_polls_are_transient() -> None:
    client = client_for(Wire(httpx.ReadTimeout("read timed out"),
                             httpx.Response(200, text="<html>maintenance</html>"),
                             httpx.Response(504, text="Gateway Time-out")))
    try:
        for _ in range(3):
            with pytest.raises(ServerError):
                await client.poll("img_1")
    finally:
        await client.aclose()


async def test_outputs_are_downloaded_without_the_key() -> None:
    wire = Wire(httpx.Response(200, content=b"\x89PNG\r\n\x1a\n-bytes",
                               headers={"content-type": "image/png"}))
    client = client_for(wire)
    try:
        async with client.stream("https://cdn.demo-images.test/img_1/0.png") as response:
            data = await response.aread()
    finally:
        await client.aclose()
    assert data.startswith(b"\x89PNG")
    assert "authorization" not in wire.requests[0].headers
    assert client.stats()["download"] == 1
