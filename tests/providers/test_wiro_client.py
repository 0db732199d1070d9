"""Wiro client behaviour against scripted answers (httpx.MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from runner.errors import (
    AuthError,
    ConnectFailed,
    JobRejected,
    RateLimited,
    ServerError,
    TransientError,
    UnknownOutcome,
)
from runner.providers.base import TaskState
from runner.providers.wiro import (
    form_fields,
    parse_task,
    wire_value,
    wiro_statuses,
)

from .conftest import (
    WIRO_KEY,
    WIRO_SECRET,
    jpeg_bytes,
    json_response,
    local_ref,
    make_job,
    parse_multipart,
    png_bytes,
    url_ref,
    vendor_json,
    wiro_client,
)

RUN_OK = {"errors": [], "taskid": "77", "socketaccesstoken": "tok", "result": True}


# -- the Run form -----------------------------------------------------------------------------

@pytest.mark.anyio
async def test_run_form_keeps_mixed_file_and_url_order(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "noext", tmp_path / "c.jpeg"
    a.write_bytes(png_bytes(8, 6))
    b.write_bytes(jpeg_bytes(5, 5))  # no extension: the type comes from the bytes
    c.write_bytes(jpeg_bytes(9, 4))
    images = (url_ref("https://img.example/first.png"), local_ref(a),
              url_ref("https://img.example/third.jpg"), local_ref(b), local_ref(c),
              url_ref("https://img.example/last.webp"))
    job = make_job("wiro/seedream-v4-5", prompt="Dress image 1 like image 2 ✨",
                   params={"width": 2560, "height": 1440, "maxImages": 2, "watermark": False},
                   images=images)
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return json_response(RUN_OK)

    async with wiro_client(handler) as client:
        result = await client.submit(job)
    assert result.task_id == "77"
    assert result.token == "tok"
    (request,) = sent
    assert request.method == "POST"
    assert str(request.url) == "https://api.wiro.test/v1/Run/bytedance/seedream-v4-5"
    parts = parse_multipart(request)
    images_sent = [p for p in parts if p.name == "inputImage"]
    assert [(p.filename, p.content_type) for p in images_sent] == [
        (None, None), ("a.png", "image/png"), (None, None), ("noext", "image/jpeg"),
        ("c.jpeg", "image/jpeg"), (None, None)]
    assert images_sent[0].data == b"https://img.example/first.png"
    assert images_sent[1].data == a.read_bytes()
    assert images_sent[2].data == b"https://img.example/third.jpg"
    assert images_sent[3].data == b.read_bytes()
    assert images_sent[4].data == c.read_bytes()
    assert images_sent[5].data == b"https://img.example/last.webp"
    fields = {p.name: p.data.decode() for p in parts if p.name != "inputImage"}
    assert fields == {"prompt": "Dress image 1 like image 2 ✨", "width": "2560",
                      "height": "1440", "maxImages": "2", "watermark": "false"}


@pytest.mark.anyio
async def test_run_form_without_images_is_still_multipart() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return json_response(RUN_OK)

    job = make_job("wiro/seedream-v3", params={"size": "1024x1024", "watermark": True,
                                               "guidanceScale": 2.5, "seed": 42})
    async with wiro_client(handler) as client:
        await client.submit(job)
    parts = parse_multipart(sent[0])
    assert [(p.name, p.data.decode()) for p in parts] == [
        ("prompt", "a red tent at dusk"), ("size", "1024x1024"), ("watermark", "true"),
        ("guidanceScale", "2.5"), ("seed", "42")]
    assert sent[0].url.path == "/v1/Run/bytedance/text-to-image-seedream-v3"


@pytest.mark.parametrize(("value", "wire"), [
    (True, "true"), (False, "false"), (0, "0"), (42, "42"), (2.5, "2.5"), (1.0, "1"),
    (1e-7, "0.0000001"), (1e21, "1000000000000000000000"), (0.1, "0.1"), ("2048x2048", "2048x2048"),
])
def test_wire_values(value: object, wire: str) -> None:
    assert wire_value("p", value) == wire


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, float("nan"), float("inf")])
def test_unsendable_values_reject_the_job(value: object) -> None:
    with pytest.raises(JobRejected, match="'p'"):
        wire_value("p", value)


def test_none_parameters_are_left_out() -> None:
    assert form_fields("x", {"seed": None, "size": "1x1"}) == [("prompt", "x"), ("size", "1x1")]


@pytest.mark.anyio
async def test_unknown_or_foreign_model_is_rejected_before_sending() -> None:
    async with wiro_client(lambda r: json_response(RUN_OK)) as client:
        with pytest.raises(JobRejected, match="not a Wiro model"):
            await client.submit(make_job("pixwith/seedream-4.5", provider="wiro"))
        with pytest.raises(JobRejected):
            await client.submit(make_job("wiro/nope"))
        assert client.requests_sent["submit"] == 0


@pytest.mark.anyio
async def test_missing_local_image_is_rejected_with_its_name(tmp_path: Path) -> None:
    ghost = tmp_path / "ghost.png"
    ghost.write_bytes(png_bytes())
    ref = local_ref(ghost)
    ghost.unlink()
    async with wiro_client(lambda r: json_response(RUN_OK)) as client:
        with pytest.raises(JobRejected, match=r"ghost\.png"):
            await client.submit(make_job(images=(ref,)))


# -- statuses ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "state"), [
    ("task_queue", TaskState.QUEUED), ("task_accept", TaskState.QUEUED),
    ("task_assign", TaskState.QUEUED), ("task_preprocess_start", TaskState.RUNNING),
    ("task_preprocess_end", TaskState.RUNNING), ("task_start", TaskState.RUNNING),
    ("task_output", TaskState.RUNNING), ("task_output_full", TaskState.RUNNING),
    ("task_end", TaskState.RUNNING), ("task_postprocess_start", TaskState.RUNNING),
    ("task_cancel", TaskState.CANCELLED),
    # the accumulated stderr of a run is an interim stage (Wiro's task docs): the verdict
    # comes with pexit. (Task/Detail's bare task_error is terminal: test_wiro_task_error.py)
    ("task_error_full", TaskState.RUNNING),
])
def test_status_words(status: str, state: TaskState) -> None:
    assert status in wiro_statuses()
    got = parse_task({"id": "5", "status": status, "debugerror": "boom"})
    assert got.state is state
    assert got.provider_status == status
    assert got.error is None


def test_unknown_status_is_running_never_success(caplog: pytest.LogCaptureFixture) -> None:
    got = parse_task({"id": "5", "status": "task_teleported", "pexit": "0",
                      "outputs": [{"url": "https://cdn/x.png"}]})
    assert got.state is TaskState.RUNNING
    assert "task_teleported" in caplog.text


@pytest.mark.parametrize(("pexit", "debugerror", "error"), [
    ("1", "CUDA out of memory", "CUDA out of memory"),
    ("137", "", "exit code 137"),
    (None, "", "no exit code"),
    ("", "", "no exit code"),
])
def test_postprocess_end_without_exit_zero_is_a_failure(pexit: str | None, debugerror: str,
                                                        error: str) -> None:
    task = {"id": "5", "status": "task_postprocess_end", "debugerror": debugerror,
            "outputs": [], "totalcost": "0"}
    if pexit is not None:
        task["pexit"] = pexit
    got = parse_task(task)
    assert got.state is TaskState.FAILED
    assert got.error is not None
    assert error in got.error
    assert got.cost_usd == 0.0


def test_stderr_then_exit_zero_is_a_success_and_nonzero_a_failure() -> None:
    interim = parse_task({"id": "5", "status": "task_error_full",
                          "debugerror": "UserWarning: x"})
    assert interim.state is TaskState.RUNNING
    assert not interim.state.terminal
    ok = parse_task({"id": "5", "status": "task_postprocess_end", "pexit": "0",
                     "debugerror": "UserWarning: x", "totalcost": "0.03",
                     "outputs": [{"name": "0.png", "url": "https://cdn/0.png", "size": "10"}]})
    assert ok.state is TaskState.SUCCEEDED
    assert ok.error is None
    bad = parse_task({"id": "5", "status": "task_postprocess_end", "pexit": "1",
                      "debugerror": "RuntimeError: image generation failed", "outputs": []})
    assert bad.state is TaskState.FAILED
    assert bad.error == "RuntimeError: image generation failed"


@pytest.mark.anyio
async def test_poll_sends_taskid_json_and_finds_its_task() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return json_response({"total": "2", "errors": [], "result": True, "tasklist": [
            {"id": "1", "status": "task_queue"},
            {"id": "9", "status": "task_start", "elapsedseconds": "2.5"}]})

    async with wiro_client(handler) as client:
        status = await client.poll("9")
    assert status.task_id == "9"
    assert status.state is TaskState.RUNNING
    assert status.elapsed_seconds == 2.5
    assert sent[0].url.path == "/v1/Task/Detail"
    assert json.loads(sent[0].content) == {"taskid": "9"}
    assert sent[0].headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_poll_of_an_unknown_task_is_a_clear_rejection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"result": False, "errors": [
            {"code": 1, "message": "There is no task yet."}]})

    async with wiro_client(handler) as client:
        with pytest.raises(JobRejected, match="no task '404'"):
            await client.poll("404")

    async with wiro_client(lambda r: json_response({"result": True, "errors": [],
                                                    "tasklist": []})) as client:
        with pytest.raises(JobRejected, match="no task"):
            await client.poll("404")


# -- cancel and kill --------------------------------------------------------------------------

def _cancel_handler(log: list[str], cancel_answer: dict) -> httpx.MockTransport:
    kill = vendor_json("wiro_v4_kill.txt")

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.url.path} {json.loads(request.content)['taskid']}")
        if request.url.path.endswith("/Task/Cancel"):
            return json_response(cancel_answer)
        return json_response(kill)

    return handler


@pytest.mark.anyio
async def test_cancel_queued_uses_cancel_only() -> None:
    calls: list[str] = []
    async with wiro_client(_cancel_handler(calls, vendor_json("wiro_v4_cancel.txt"))) as client:
        await client.cancel("634574", TaskState.QUEUED)
        assert client.requests_sent["cancel"] == 1
    assert calls == ["/v1/Task/Cancel 634574"]


@pytest.mark.anyio
async def test_cancel_of_a_task_that_started_falls_back_to_kill() -> None:
    calls: list[str] = []
    refused = {"result": False, "errors": [{"code": 1,
                                            "message": "Task is not in a cancellable state."}]}
    async with wiro_client(_cancel_handler(calls, refused)) as client:
        await client.cancel("634574", TaskState.QUEUED)
    assert calls == ["/v1/Task/Cancel 634574", "/v1/Task/Kill 634574"]


@pytest.mark.anyio
async def test_running_tasks_are_killed_and_finished_ones_left_alone() -> None:
    calls: list[str] = []
    async with wiro_client(_cancel_handler(calls, {})) as client:
        await client.cancel("534574", TaskState.RUNNING)
        for state in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
            await client.cancel("534574", state)
    assert calls == ["/v1/Task/Kill 534574"]


@pytest.mark.anyio
async def test_cancel_does_not_hide_fatal_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"result": False, "errors": [{"code": 99, "message": "bad token"}]})

    async with wiro_client(handler) as client:
        with pytest.raises(AuthError):
            await client.cancel("1", TaskState.QUEUED)
        assert client.requests_sent["cancel"] == 1  # no Kill after an auth failure


# -- HTTP-level and transport errors ----------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(("retry_after", "expected"), [
    ("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
async def test_429_is_rate_limited_with_retry_after(retry_after: str | None,
                                                    expected: float | None) -> None:
    headers = {"retry-after": retry_after} if retry_after else {}

    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"result": False, "errors": [{"code": 0, "message": "slow down"}]},
                             status=429, headers=headers)

    async with wiro_client(handler) as client:
        for call in (client.submit(make_job()), client.poll("1")):
            with pytest.raises(RateLimited) as info:
                await call
            assert info.value.retry_after == expected
            assert info.value.http_status == 429


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_a_server_error(status: int) -> None:
    async with wiro_client(lambda r: httpx.Response(status, text="<h1>oops</h1>")) as client:
        with pytest.raises(ServerError) as info:
            await client.submit(make_job())
        assert info.value.http_status == status
        with pytest.raises(ServerError):
            await client.poll("1")


@pytest.mark.anyio
async def test_gateway_timeout_on_submit_is_unknown_outcome_but_transient_on_poll() -> None:
    async with wiro_client(lambda r: httpx.Response(504, text="Gateway Timeout")) as client:
        with pytest.raises(UnknownOutcome):
            await client.submit(make_job())
        with pytest.raises(ServerError):
            await client.poll("1")


@pytest.mark.anyio
async def test_code_0_server_message_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"result": False, "errors": [
            {"code": 0, "message": "Internal server error, please try again"}]})

    async with wiro_client(handler) as client:
        with pytest.raises(ServerError):
            await client.submit(make_job())


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_auth_errors_even_without_json(status: int) -> None:
    async with wiro_client(lambda r: httpx.Response(status, text="denied")) as client:
        with pytest.raises(AuthError):
            await client.poll("1")


@pytest.mark.anyio
async def test_non_json_answer_is_a_server_error_with_a_short_excerpt() -> None:
    page = "<html><body>" + "maintenance " * 100 + "</body></html>"
    async with wiro_client(lambda r: httpx.Response(200, text=page)) as client:
        with pytest.raises(ServerError) as info:
            await client.poll("1")
    assert "<html><body>maintenance" in info.value.message
    assert len(info.value.message) < 400


@pytest.mark.anyio
async def test_404_page_rejects_the_request() -> None:
    async with wiro_client(lambda r: httpx.Response(404, text="Not Found")) as client:
        with pytest.raises(JobRejected, match="HTTP 404"):
            await client.submit(make_job())


@pytest.mark.anyio
async def test_success_without_taskid_is_unknown_outcome() -> None:
    async with wiro_client(lambda r: json_response({"result": True, "errors": []})) as client:
        with pytest.raises(UnknownOutcome):
            await client.submit(make_job())


def _raiser(exc: type[httpx.TransportError]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_nothing_sent_is_connect_failed_everywhere(exc: type[httpx.TransportError]) -> None:
    async with wiro_client(_raiser(exc)) as client:
        for call in (client.submit(make_job()), client.poll("1"),
                     client.cancel("1", TaskState.RUNNING)):
            with pytest.raises(ConnectFailed):
                await call


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError,
                                 httpx.WriteError, httpx.WriteTimeout])
async def test_lost_answers_are_unknown_for_submit_and_transient_for_the_rest(
        exc: type[httpx.TransportError]) -> None:
    async with wiro_client(_raiser(exc)) as client:
        with pytest.raises(UnknownOutcome) as info:
            await client.submit(make_job())
        assert "may have been created" in info.value.message
        for call in (client.poll("1"), client.cancel("1", TaskState.RUNNING)):
            with pytest.raises(ServerError) as transient:
                await call
            assert isinstance(transient.value, TransientError)
        assert client.requests_sent["submit"] == 1
        assert client.requests_sent["poll"] == 1  # never retried inside the client
        assert client.requests_sent["cancel"] == 1


@pytest.mark.anyio
async def test_errors_never_carry_the_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = f"bad key {WIRO_KEY} / {WIRO_SECRET} / {request.headers['x-signature']}"
        return json_response({"result": False, "errors": [{"code": 0, "message": echoed}]})

    async with wiro_client(handler) as client:
        with pytest.raises(JobRejected) as info:
            await client.submit(make_job())
    text = str(info.value) + repr(info.value.args)
    assert WIRO_KEY not in text
    assert WIRO_SECRET not in text
    assert "***" in text
    assert WIRO_KEY not in repr(client)
