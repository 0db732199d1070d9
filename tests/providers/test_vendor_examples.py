"""The vendors' own example answers, exactly as their pages print them, parsed by the clients.

Fixtures under fixtures/ are verbatim copies of the JSON examples on the vendor pages (Wiro's
seedream-v4-5, seedream-v4 and text-to-image-seedream-v3 pages; Pixwith's Seedream 4.5 page).
"""

from __future__ import annotations

import json

import httpx
import pytest

from runner.errors import (
    AuthError,
    ConcurrencyLimited,
    InsufficientBalance,
    JobRejected,
    ProviderError,
)
from runner.providers.base import RemoteOutput, SubmitResult, TaskState
from runner.providers.wiro import parse_run_response, parse_task, parse_task_detail

from .conftest import (
    fixture_text,
    json_response,
    make_job,
    pixwith_client,
    repair_categories,
    url_ref,
    vendor_json,
    wiro_client,
)

WIRO_PAGES = ("v4-5", "v4", "v3")
CDN_URL = ("https://cdn1.wiro.ai/6a6af820-c5050aee-40bd7b83-a2e186c6-7f61f7da-3894e49c-"
           "fc0eeb66-9b500fe2/0.png")
VENDOR_OUTPUT = RemoteOutput(url=CDN_URL, name="0.png", content_type="image/png", size=202472)


def test_categories_line_is_the_only_invalid_json_and_the_repair_touches_only_it() -> None:
    raw = fixture_text("wiro_v4_kill.txt")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    repaired = repair_categories(raw)
    changed = [(a, b) for a, b in zip(raw.splitlines(), repaired.splitlines(), strict=True)
               if a != b]
    assert changed == [('"categories": "["tool","image-to-image","quick-showcase",'
                        '"compare-landscape"]",',
                        '"categories": "[\\"tool\\",\\"image-to-image\\",\\"quick-showcase\\",'
                        '\\"compare-landscape\\"]",')]
    doc = json.loads(repaired)
    assert json.loads(doc["tasklist"][0]["categories"])[0] == "tool"


@pytest.mark.parametrize("page", WIRO_PAGES)
def test_wiro_run_response(page: str) -> None:
    doc = json.loads(fixture_text(f"wiro_{page}_run.txt"))  # valid JSON as printed
    assert parse_run_response(doc) == SubmitResult(task_id="2221",
                                                   token="eDcCm5yyUfIvMFspTwww49OUfgXkQt")


def test_wiro_task_detail_success_with_outputs_and_cost() -> None:
    status = parse_task_detail(vendor_json("wiro_v4_task_detail.txt"), "534574")
    assert status.state is TaskState.SUCCEEDED
    assert status.task_id == "534574"
    assert status.outputs == (VENDOR_OUTPUT,)
    assert status.cost_usd == pytest.approx(0.00351)
    assert status.elapsed_seconds == pytest.approx(6.0)
    assert status.error is None
    assert status.provider_status == "task_postprocess_end pexit=0"


@pytest.mark.parametrize("page", ["v4-5", "v3"])
def test_wiro_task_detail_without_pexit_but_with_outputs_is_a_success(page: str) -> None:
    # These two pages print a shorter Task/Detail example with no pexit (and no totalcost).
    # Wiro's task documentation says to check pexit or outputs: with outputs listed and no
    # exit code, the task succeeded (treating it as failed would invite paying twice).
    doc = json.loads(fixture_text(f"wiro_{page}_task_detail.txt"))
    status = parse_task_detail(doc, "2221")
    assert status.state is TaskState.SUCCEEDED
    assert status.error is None
    assert status.outputs == (VENDOR_OUTPUT,)
    assert status.cost_usd is None


@pytest.mark.parametrize("page", WIRO_PAGES)
@pytest.mark.parametrize("call", ["kill", "cancel"])
def test_wiro_kill_and_cancel_responses(page: str, call: str) -> None:
    doc = vendor_json(f"wiro_{page}_{call}.txt")
    assert doc["result"] is True
    status = parse_task(doc["tasklist"][0])
    assert status.state is TaskState.CANCELLED
    assert status.task_id == ("534574" if call == "kill" else "634574")
    assert status.cost_usd == pytest.approx(0.00351)
    assert status.provider_status == "task_cancel"


@pytest.mark.anyio
async def test_wiro_client_end_to_end_on_vendor_answers() -> None:
    answers = {
        "/v1/Run/bytedance/seedream-v4": fixture_text("wiro_v4_run.txt"),
        "/v1/Task/Detail": repair_categories(fixture_text("wiro_v4_task_detail.txt")),
        "/v1/Task/Kill": repair_categories(fixture_text("wiro_v4_kill.txt")),
    }
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, text=answers[request.url.path],
                              headers={"content-type": "application/json"})

    async with wiro_client(handler) as client:
        submitted = await client.submit(make_job("wiro/seedream-v4"))
        assert submitted.task_id == "2221"
        status = await client.poll("534574")
        assert status.state is TaskState.SUCCEEDED
        assert status.outputs == (VENDOR_OUTPUT,)
        await client.cancel("534574", TaskState.RUNNING)
    assert paths == list(answers)


def test_pixwith_create_response() -> None:
    from runner.providers.pixwith import parse_create_response

    doc = json.loads(fixture_text("pixwith_create_response.txt"))
    assert parse_create_response(doc) == SubmitResult(
        task_id="d425ab4dc256f0ebaa84862b9cea8a3d", estimated_seconds=20)


@pytest.mark.anyio
@pytest.mark.parametrize("example", ["t2i", "i2i"])
async def test_pixwith_sends_the_vendor_example_request(example: str) -> None:
    expected = json.loads(fixture_text(f"pixwith_create_request_{example}.txt"))
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, text=fixture_text("pixwith_create_response.txt"))

    images = tuple(url_ref(u) for u in expected.get("image_urls", []))
    job = make_job("pixwith/seedream-4.5", prompt=expected["prompt"],
                   params=expected["options"], images=images)
    async with pixwith_client(handler) as client:
        result = await client.submit(job)
    assert result.task_id == "d425ab4dc256f0ebaa84862b9cea8a3d"
    assert result.estimated_seconds == 20
    (request,) = sent
    assert request.url.path == "/api/task/create"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == expected
    assert list(json.loads(request.content)) == list(expected)  # same key order as the vendor


# -- error envelopes --------------------------------------------------------------------------

# From Wiro's error reference: the envelope and the documented messages.
WIRO_ENVELOPES = [
    (97, "Insufficient balance", 200, InsufficientBalance),
    (96, "You have reached your concurrent task limit. With your current balance of $5, you "
         "can run up to 1 tasks at the same time. Add funds to increase your limit.", 200,
     ConcurrencyLimited),
    (98, "sign in to run this model", 200, AuthError),
    (99, "Authorization bearer token is invalid.", 200, AuthError),
    (0, "Project authorization is not valid.", 401, AuthError),
    (0, "Project requires signature authentication. x-signature and x-nonce headers are "
        "required.", 401, AuthError),
    (1, "slug-owner-project-not-exist", 200, JobRejected),
    (0, "Request parameter [prompt] required", 200, JobRejected),
    (0, "Request parameter [maxImages] must be between 1 and 15", 200, JobRejected),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "message", "http", "error"), WIRO_ENVELOPES)
async def test_wiro_error_envelopes(code: int, message: str, http: int,
                                    error: type[ProviderError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"result": False, "errors": [{"code": code, "message": message}]},
                             status=http)

    async with wiro_client(handler) as client:
        with pytest.raises(error) as info:
            await client.submit(make_job())
    assert type(info.value) is error
    assert info.value.code == code
    assert message[:20] in info.value.message
    if code == 1:
        assert "bytedance/seedream-v4" in info.value.message  # names the unknown model


PIXWITH_ENVELOPES = [
    ("Invalid API KEY", AuthError),
    ("Credits not enough", InsufficientBalance),
    ("Invalid image format", JobRejected),
    ("Invalid image url", JobRejected),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("message", "error"), PIXWITH_ENVELOPES)
async def test_pixwith_error_envelopes(message: str, error: type[ProviderError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"code": 0, "message": message})

    async with pixwith_client(handler) as client:
        with pytest.raises(error) as info:
            await client.submit(make_job("pixwith/seedream-4.5"))
        assert type(info.value) is error
        assert info.value.code == 0
        assert message in info.value.message
        with pytest.raises(error):
            await client.poll("d425ab4dc256f0ebaa84862b9cea8a3d")
