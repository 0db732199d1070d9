"""The BytePlus client against its emulator, in process: a synchronous call answered as a
finished task (JSON and server-sent events), partial failures, reference images as URLs and
data URIs, every error class, and the provider contract for synchronous hosts.

Nothing depends on timing: the emulator holds a call by its own clock, which these tests
leave at zero latency or move by hand (``ManualClock``)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from runner.emulator import EmulatorConfig
from runner.errors import (
    AuthError,
    CancelUnsupported,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.hosts.byteplus import SPEC
from runner.jobs import ImageRef
from runner.providers.base import TaskState
from runner.providers.byteplus import StreamReader, parse_answer, request_body
from runner.testing import ManualClock, check_provider_contract

from .support import MODEL_40, MODEL_45, client, job

SET_OF_3 = {"sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 3}}


def test_byteplus_meets_the_synchronous_provider_contract() -> None:
    result = asyncio.run(check_provider_contract(SPEC))
    assert (result.outputs, result.polls, result.cancel) == (1, 0, "runs on")
    streamed = asyncio.run(check_provider_contract(SPEC, model=MODEL_45,
                                                   params={"stream": True, **SET_OF_3}))
    assert streamed.outputs == 3


def test_the_request_sends_every_parameter_watermark_included() -> None:
    body = request_body(SPEC.models[0], job(params={"size": "2K"}), None)
    assert body == {"model": "seedream-4-0-250828", "prompt": "a red kite over dunes",
                    "size": "2K", "sequential_image_generation": "disabled", "stream": False,
                    "response_format": "url", "watermark": False}
    ep = request_body(SPEC.models[1], job(model=MODEL_45, params={"model": "ep-2025-x"}),
                      ["https://a.example/1.png", "https://a.example/2.png"])
    assert ep["model"] == "ep-2025-x"
    assert ep["image"] == ["https://a.example/1.png", "https://a.example/2.png"]


async def _one(params: dict[str, object] | None = None, prompt: str = "a kite",
               model: str = MODEL_40, images: tuple[ImageRef, ...] = ()) -> tuple:
    async with client() as (bp, state):
        result = await bp.submit(job(prompt, model=model, params=params, images=images))
        return result, state.snapshot(), state


@pytest.mark.parametrize("stream", [False, True])
def test_a_set_of_images_comes_back_as_a_finished_task_costed_per_image(stream: bool) -> None:
    result, stats, _ = asyncio.run(_one({"stream": stream, **SET_OF_3}, model=MODEL_45))
    final = result.final
    assert final is not None
    assert final.state is TaskState.SUCCEEDED
    assert len(final.outputs) == 3
    assert final.cost_usd == pytest.approx(3 * 0.04)
    assert final.error is None
    assert stats["images_billed"] == 3
    assert stats["tasks_created_total"] == 1
    assert result.task_id
    assert result.task_id == final.task_id


@pytest.mark.parametrize("stream", [False, True])
def test_a_partial_failure_delivers_the_images_made_and_bills_only_them(stream: bool) -> None:
    result, stats, _ = asyncio.run(_one({"stream": stream, **SET_OF_3},
                                        prompt="a kite emulator:fail"))
    final = result.final
    assert final is not None
    assert final.state is TaskState.SUCCEEDED
    assert len(final.outputs) == 2
    assert final.cost_usd == pytest.approx(2 * 0.03)
    assert final.provider_status == "2 generated, 1 failed"
    assert final.error == ("1 image failed: OutputImageSensitiveContentDetected: The request "
                           "failed because the output image may contain sensitive information.")
    assert stats["images_billed"] == 2


def test_a_single_image_that_fails_is_a_rejection_and_costs_nothing() -> None:
    with pytest.raises(JobRejected, match="OutputImageSensitiveContentDetected"):
        asyncio.run(_one(prompt="a kite emulator:fail"))


def test_a_streamed_single_failure_is_a_failed_task() -> None:
    result, stats, _ = asyncio.run(_one({"stream": True}, prompt="a kite emulator:fail"))
    assert result.final.state is TaskState.FAILED
    assert result.final.cost_usd is None
    assert stats["images_billed"] == 0


def test_reference_images_go_as_urls_and_local_files_as_data_uris(tmp_path: Path) -> None:
    png = tmp_path / "ref.png"
    from PIL import Image

    Image.new("RGB", (8, 8), "teal").save(png)
    refs = (ImageRef(ref="https://cdn.example/a.png", url="https://cdn.example/a.png"),
            ImageRef(ref="ref.png", path=str(png), sha256="x"))
    result, _, state = asyncio.run(_one(images=refs))
    assert result.final.state is TaskState.SUCCEEDED
    [task] = state.tasks.values()
    import hashlib

    assert task.inputs == ("https://cdn.example/a.png",
                           "sha256:" + hashlib.sha256(png.read_bytes()).hexdigest())


def test_a_local_file_byteplus_cannot_read_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(JobRejected, match="not a recognised image"):
        asyncio.run(_one(images=(ImageRef(ref="notes.txt", path=str(bad), sha256="x"),)))


def test_wrong_credentials_are_an_auth_error_in_byteplus_words() -> None:
    async def go() -> None:
        async with client(api_key="wrong") as (bp, _):
            await bp.submit(job())

    with pytest.raises(AuthError, match="AuthenticationError"):
        asyncio.run(go())


def test_every_refused_parameter_is_named() -> None:
    async def go() -> dict:
        async with client() as (bp, _):
            response = await bp.client.post(
                f"{bp.base_url}/images/generations", headers=bp._headers(),
                json={"model": "seedream-4-5-251128", "prompt": "x", "size": "1K"})
            return {"status": response.status_code, **response.json()}

    answer = asyncio.run(go())
    assert answer["status"] == 400
    assert answer["error"]["param"] == "size"
    assert answer["error"]["code"] == "InvalidParameter"
    assert answer["error"]["type"] == "BadRequest"


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"prompt": "x"}, "model", "MissingParameter"),
    ({"model": "seedream-9"}, "model", "InvalidEndpointOrModel.NotFound"),
    ({"model": "seedream-4-0-250828"}, "prompt", "MissingParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "seed": 3}, "seed", "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "n": 3}, "n", "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "image": "ftp://a/b.png"}, "image",
     "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "image": "data:image/png;base64,@@"},
     "image", "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "image": ["https://a/b.png"] * 15},
     "image", "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "size": "500x500"}, "size",
     "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "sequential_image_generation": "on"},
     "sequential_image_generation", "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "sequential_image_generation": "auto",
      "image": ["https://a/b.png"] * 2, "sequential_image_generation_options":
      {"max_images": 14}}, "sequential_image_generation_options.max_images",
     "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "watermark": "yes"}, "watermark",
     "InvalidParameter"),
    ({"model": "seedream-4-0-250828", "prompt": "x", "response_format": "png"},
     "response_format", "InvalidParameter"),
    ({"model": "seedream-4-5-251128", "prompt": "x", "optimize_prompt_options":
      {"mode": "fast"}}, "optimize_prompt_options.mode", "InvalidParameter"),
])
def test_the_emulator_refuses_each_bad_field_in_byteplus_shape(
        body: dict, param: str, code: str) -> None:
    async def go() -> httpx.Response:
        async with client() as (bp, _):
            return await bp.client.post(f"{bp.base_url}/images/generations",
                                        headers=bp._headers(), json=body)

    response = asyncio.run(go())
    error = response.json()["error"]
    assert (response.status_code, error["param"], error["code"]) == (
        404 if code.endswith("NotFound") else 400, param, code)
    assert set(error) == {"code", "message", "param", "type"}


def test_a_refused_request_is_a_rejection_naming_the_parameter() -> None:
    with pytest.raises(JobRejected, match=r"param optimize_prompt_options\.mode"):
        asyncio.run(_one({"optimize_prompt_options": {"mode": "fast"}}, model=MODEL_45))


@pytest.mark.parametrize(("faults", "error"), [
    ("429=1", RateLimited), ("5xx=1", ServerError), ("drop=1", UnknownOutcome)])
def test_faults_become_the_error_that_says_whether_images_may_exist(
        faults: str, error: type[Exception]) -> None:
    async def go() -> None:
        async with client(EmulatorConfig(latency=0.0, seed=3, faults=faults)) as (bp, _):
            await bp.submit(job())

    with pytest.raises(error):
        asyncio.run(go())


def test_an_answer_lost_after_the_images_were_made_leaves_them_billed_and_unfetched() -> None:
    async def go() -> dict:
        # every call is dropped, before or after its handler (a seeded draw): the six
        # calls of seed 0 meet both kinds
        async with client(EmulatorConfig(latency=0.0, seed=0, faults="drop=1")) as (bp, state):
            for n in range(6):
                with pytest.raises(UnknownOutcome):
                    await bp.submit(job(f"kite {n}", n=n))
            return state.snapshot()

    stats = asyncio.run(go())
    after = stats["faults"]["drop_after"]
    assert 0 < after < 6
    assert stats["tasks_answer_lost"] == after
    assert stats["images_billed"] == after  # made and billed, never answered
    assert stats["paid_outputs_unfetched"] == after
    assert stats["tasks_created_total"] == after


def test_the_call_is_held_by_the_emulators_clock() -> None:
    clock = ManualClock()

    async def go() -> tuple[bool, TaskState]:
        async with client(EmulatorConfig(latency=30.0, seed=1), clock=clock) as (bp, _):
            call = asyncio.ensure_future(bp.submit(job()))
            await asyncio.sleep(0.1)
            held = not call.done()  # the clock stands still: it cannot have answered
            clock.advance(31)
            result = await asyncio.wait_for(call, 60)
            return held, result.final.state

    assert asyncio.run(go()) == (True, TaskState.SUCCEEDED)


def test_nothing_can_be_polled_or_cancelled() -> None:
    async def go() -> None:
        async with client() as (bp, _):
            with pytest.raises(JobRejected, match="no task to ask about"):
                await bp.poll("call-1")
            await bp.cancel("call-1", TaskState.SUCCEEDED)  # ended: nothing to do
            with pytest.raises(CancelUnsupported):
                await bp.cancel("call-1", TaskState.RUNNING)

    asyncio.run(go())


def test_the_documented_answers_parse() -> None:
    # BytePlus's examples (third-party verbatim copies of the API page): a set of three, a
    # streamed set, a partial failure event.
    answer = {"model": "seedream-4-5-251128", "created": 1757388756,
              "data": [{"url": "https://x/0.jpeg", "size": "2720x1536"},
                       {"url": "https://x/1.jpeg", "size": "2720x1536"},
                       {"url": "https://x/2.jpeg", "size": "2720x1536"}],
              "usage": {"generated_images": 3, "output_tokens": 48960, "total_tokens": 48960}}
    final = parse_answer(answer, "t", 0.04)
    assert [o.url for o in final.outputs] == ["https://x/0.jpeg", "https://x/1.jpeg",
                                              "https://x/2.jpeg"]
    assert final.outputs[0].content_type == "image/jpeg"
    assert final.cost_usd == pytest.approx(0.12)
    stream = [
        {"type": "image_generation.partial_succeeded", "model": "m", "created": 1,
         "image_index": 0, "url": "https://x/0.jpeg", "size": "2496x1664"},
        {"type": "image_generation.partial_failed", "model": "m", "created": 1,
         "image_index": 1, "error": {"code": "OutputImageSensitiveContentDetected",
                                     "message": "blocked"}},
        {"type": "image_generation.completed", "model": "m", "created": 1,
         "usage": {"generated_images": 1, "output_tokens": 16280, "total_tokens": 16280}},
    ]
    reader = StreamReader()
    for event in stream:
        for line in (f"event: {event['type']}", f"data: {json.dumps(event)}", ""):
            reader.feed(line)
    reader.feed("data: [DONE]")
    reader.close()
    status = reader.status("t", 0.03)
    assert reader.done
    assert status.state is TaskState.SUCCEEDED
    assert [o.url for o in status.outputs] == ["https://x/0.jpeg"]
    assert status.cost_usd == pytest.approx(0.03)
    assert status.error == "1 image failed: OutputImageSensitiveContentDetected: blocked"
    b64 = base64.b64encode(b"x").decode()
    assert parse_answer({"data": [{"b64_json": b64}]}, "t", 0.03).state is TaskState.FAILED
