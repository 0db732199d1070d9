"""Pixwith client behaviour against scripted answers (httpx.MockTransport)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from runner.errors import (
    AuthError,
    CancelUnsupported,
    ConcurrencyLimited,
    ConnectFailed,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.providers.base import TaskState
from runner.providers.pixwith import MAX_UPLOAD_BYTES, parse_task

from .conftest import (
    PIXWITH_KEY,
    fixture_text,
    jpeg_bytes,
    json_response,
    local_ref,
    make_job,
    parse_multipart,
    pixwith_client,
    png_bytes,
    url_ref,
)

S3 = "https://uploads.pixwith-storage.test/bucket"


class FakePixwith:
    """Answers task/pre_url, the presigned upload, task/create and task/get like Pixwith."""

    def __init__(self, upload_status: int = 204) -> None:
        self.requests: list[httpx.Request] = []
        self.uploads: list[tuple[dict[str, str], str, str, bytes]] = []
        self.upload_status = upload_status
        self.counter = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "uploads.pixwith-storage.test":
            parts = parse_multipart(request)
            fields = {p.name: p.data.decode() for p in parts[:-1]}
            file = parts[-1]
            assert file.name == "file"
            self.uploads.append((fields, file.filename or "", file.content_type or "", file.data))
            return httpx.Response(self.upload_status)
        body = json.loads(request.content)
        path = request.url.path
        if path == "/api/task/pre_url":
            self.counter += 1
            key = f"u/{self.counter}-{body['image_name']}"
            return json_response({"code": 1, "message": "success", "data": {
                "upload_url": {"url": S3, "fields": {"key": key, "policy": "p0l1cy",
                                                     "Content-Type": body["content_type"]}},
                "image_url": f"https://cdn.pixwith.test/{key}"}})
        if path == "/api/task/create":
            return httpx.Response(200, text=fixture_text("pixwith_create_response.txt"))
        raise AssertionError(f"unexpected {path}")

    def api_requests(self, path: str) -> list[dict]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]


@pytest.mark.anyio
async def test_local_images_are_uploaded_and_order_is_kept(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.JPEG"
    a.write_bytes(png_bytes(10, 10))
    b.write_bytes(jpeg_bytes(7, 3))
    fake = FakePixwith()
    job = make_job("pixwith/seedream-4.5", prompt="mix them",
                   params={"num_outputs": 2, "resolution": "4K"},
                   images=(local_ref(a), url_ref("https://img.example/x.jpg"), local_ref(b)))
    async with pixwith_client(fake) as client:
        result = await client.submit(job)
        assert client.requests_sent["upload"] == 4  # two pre_url + two presigned POSTs
        assert client.requests_sent["submit"] == 1
    assert result.task_id == "d425ab4dc256f0ebaa84862b9cea8a3d"
    assert fake.api_requests("/api/task/pre_url") == [
        {"image_name": "a.png", "content_type": "image/png"},
        {"image_name": "b.JPEG", "content_type": "image/jpeg"}]
    assert [(f["key"], name, ctype, data) for f, name, ctype, data in fake.uploads] == [
        ("u/1-a.png", "a.png", "image/png", a.read_bytes()),
        ("u/2-b.JPEG", "b.JPEG", "image/jpeg", b.read_bytes())]
    assert all(f["policy"] == "p0l1cy" for f, *_ in fake.uploads)
    (create,) = fake.api_requests("/api/task/create")
    assert create == {
        "prompt": "mix them",
        "image_urls": ["https://cdn.pixwith.test/u/1-a.png", "https://img.example/x.jpg",
                       "https://cdn.pixwith.test/u/2-b.JPEG"],
        "model_id": "0-32",
        "options": {"prompt_optimization": False, "num_outputs": 2, "resolution": "4K",
                    "aspect_ratio": "1:1"},
    }
    for request in fake.requests:
        if request.url.host == "uploads.pixwith-storage.test":
            assert "api-key" not in request.headers  # the key never goes to the storage host
        else:
            assert request.headers["api-key"] == PIXWITH_KEY
            assert request.headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_a_file_without_a_known_extension_gets_one(tmp_path: Path) -> None:
    odd = tmp_path / "scan.bin"
    odd.write_bytes(png_bytes())
    fake = FakePixwith()
    async with pixwith_client(fake) as client:
        await client.submit(make_job("pixwith/seedream-4.5", images=(local_ref(odd),)))
    assert fake.api_requests("/api/task/pre_url") == [
        {"image_name": "scan.bin.png", "content_type": "image/png"}]


@pytest.mark.anyio
async def test_too_big_or_wrong_type_is_rejected_before_any_upload(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes())
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes())
    os.truncate(big, MAX_UPLOAD_BYTES + 1)  # sparse: cheap to make
    webp = tmp_path / "style.webp"
    webp.write_bytes(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40)
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    fake = FakePixwith()
    async with pixwith_client(fake) as client:
        for bad, words in ((big, "10 MB"), (webp, "WEBP"), (junk, "not a recognised image")):
            with pytest.raises(JobRejected) as info:
                await client.submit(make_job("pixwith/seedream-4.5",
                                             images=(local_ref(good), local_ref(bad))))
            assert bad.name in info.value.message
            assert words in info.value.message
        assert sum(client.requests_sent.values()) == 0
    assert fake.requests == []


@pytest.mark.anyio
async def test_more_than_four_images_is_rejected() -> None:
    fake = FakePixwith()
    refs = tuple(url_ref(f"https://img.example/{i}.png") for i in range(5))
    async with pixwith_client(fake) as client:
        with pytest.raises(JobRejected, match="at most 4"):
            await client.submit(make_job("pixwith/seedream-4.5", images=refs))
    assert fake.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "body", "error"), [
    (403, "<Error><Code>AccessDenied</Code><Message>Policy Condition failed</Message></Error>",
     JobRejected),
    (403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
     ServerError),
    (500, "<Error><Code>InternalError</Code></Error>", ServerError),
    (503, "Slow Down", ServerError),
])
async def test_presigned_upload_failures(tmp_path: Path, status: int, body: str,
                                         error: type[Exception]) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(png_bytes())
    fake = FakePixwith()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "uploads.pixwith-storage.test":
            return httpx.Response(status, text=body)
        return fake(request)

    async with pixwith_client(handler) as client:
        with pytest.raises(error) as info:
            await client.submit(make_job("pixwith/seedream-4.5", images=(local_ref(img),)))
        assert type(info.value) is error  # never an AuthError: that is the storage host
        assert client.requests_sent["submit"] == 0  # no task created after a failed upload


@pytest.mark.anyio
async def test_upload_transport_loss_is_transient_not_unknown(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(png_bytes())
    fake = FakePixwith()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "uploads.pixwith-storage.test":
            raise httpx.ReadTimeout("slow storage", request=request)
        return fake(request)

    async with pixwith_client(handler) as client:
        with pytest.raises(ServerError):
            await client.submit(make_job("pixwith/seedream-4.5", images=(local_ref(img),)))


@pytest.mark.anyio
async def test_create_answer_lost_is_unknown_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    async with pixwith_client(handler) as client:
        with pytest.raises(UnknownOutcome):
            await client.submit(make_job("pixwith/seedream-4.5"))
        with pytest.raises(ServerError):
            await client.poll("t")


@pytest.mark.anyio
async def test_connect_failure_and_429_and_5xx() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with pixwith_client(refuse) as client:
        with pytest.raises(ConnectFailed):
            await client.submit(make_job("pixwith/seedream-4.5"))

    async with pixwith_client(lambda r: httpx.Response(
            429, json={"code": 0, "message": "Too many requests"},
            headers={"Retry-After": "3"})) as client:
        with pytest.raises(RateLimited) as info:
            await client.poll("t")
        assert info.value.retry_after == 3.0

    async with pixwith_client(lambda r: httpx.Response(502, text="bad gateway")) as client:
        with pytest.raises(ServerError):
            await client.submit(make_job("pixwith/seedream-4.5"))


@pytest.mark.anyio
@pytest.mark.parametrize(("message", "error"), [
    ("Too many tasks in progress, please try again later", ConcurrencyLimited),
    ("Too many requests, please slow down.", RateLimited),
    ("Internal server error", ServerError),
    ("Invalid model_id: '0-99'", JobRejected),
])
async def test_worded_limits_and_server_errors(message: str, error: type[Exception]) -> None:
    async with pixwith_client(lambda r: json_response({"code": 0, "message": message})) as client:
        with pytest.raises(error) as info:
            await client.submit(make_job("pixwith/seedream-4.5"))
    assert type(info.value) is error


@pytest.mark.anyio
async def test_http_401_is_an_auth_error() -> None:
    async with pixwith_client(lambda r: httpx.Response(401, text="Unauthorized")) as client:
        with pytest.raises(AuthError):
            await client.poll("t")


# -- poll -------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_poll_statuses_outputs_and_credits() -> None:
    answers = iter([
        {"task_id": "t1", "status": 1},
        {"task_id": "t1", "status": 2, "result_urls": [
            "https://cdn.pixwith.test/out/t1-0.png", "https://cdn.pixwith.test/out/t1-1.jpg"]},
    ])
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return json_response({"code": 1, "message": "success", "data": next(answers)})

    async with pixwith_client(handler) as client:
        running = await client.poll("t1")
        done = await client.poll("t1")
    assert sent == [{"task_id": "t1"}, {"task_id": "t1"}]
    assert running.state is TaskState.RUNNING
    assert running.provider_status == "1"
    assert done.state is TaskState.SUCCEEDED
    assert done.provider_status == "2"
    assert [(o.name, o.content_type) for o in done.outputs] == [("t1-0.png", "image/png"),
                                                               ("t1-1.jpg", "image/jpeg")]
    assert done.credits == 12  # 6 credits per image, 2 images
    assert done.cost_usd is None


def test_failed_and_odd_statuses() -> None:
    failed = parse_task({"task_id": "t", "status": 3, "message": "NSFW content detected"}, "t", 6)
    assert failed.state is TaskState.FAILED
    assert failed.error == "NSFW content detected"
    assert failed.credits is None
    silent = parse_task({"task_id": "t", "status": "3"}, "t", 6)
    assert silent.state is TaskState.FAILED
    assert silent.error == "Pixwith reported the task failed"
    empty = parse_task({"task_id": "t", "status": 2, "result_urls": []}, "t", 6)
    assert empty.state is TaskState.FAILED
    odd = parse_task({"task_id": "t", "status": 9, "result_urls": ["https://x/y.png"]}, "t", 6)
    assert odd.state is TaskState.RUNNING  # unknown: never a success


@pytest.mark.anyio
async def test_cancel_says_it_cannot_and_sends_nothing() -> None:
    fake = FakePixwith()
    async with pixwith_client(fake) as client:
        assert client.can_cancel is False
        for task_id, state in (("t1", TaskState.RUNNING), ("t2", TaskState.QUEUED)):
            with pytest.raises(CancelUnsupported, match="no call to stop a task"):
                await client.cancel(task_id, state)
        await client.cancel("t3", TaskState.SUCCEEDED)  # finished: nothing to stop
        assert sum(client.requests_sent.values()) == 0
    assert fake.requests == []


@pytest.mark.anyio
async def test_get_credits() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return json_response({"code": 1, "data": {"credits": 500}})

    async with pixwith_client(handler) as client:
        assert await client.get_credits() == 500.0
        assert client.requests_sent["balance"] == 1
    assert sent[0].url.path == "/api/task/get_credits"
    assert sent[0].headers["api-key"] == PIXWITH_KEY


@pytest.mark.anyio
async def test_errors_never_carry_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"code": 0, "message": f"Invalid image url for {PIXWITH_KEY}"})

    async with pixwith_client(handler) as client:
        with pytest.raises(JobRejected) as info:
            await client.submit(make_job("pixwith/seedream-4.5"))
    assert PIXWITH_KEY not in str(info.value)
    assert "***" in str(info.value)
