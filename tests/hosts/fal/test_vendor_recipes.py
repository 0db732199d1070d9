"""fal's own documented requests, sent unchanged (but for the host) to the emulator: the
model pages' "Full Example" inputs (Seedream 4.0 and 4.5, text-to-image and edit), the
queue page's status, result and cancel calls — and the answers in the shapes fal
documents: the submit's URLs on the app id without the subpath, 202 then 200 on status,
``logs`` with ``?logs=1``, ``{"images", "seed"}``, the 422 ``detail`` list, the 401s.

Sources: fal.ai/models/fal-ai/bytedance/seedream/{v4,v4.5}/{text-to-image,edit} (llms.txt
and API pages), docs.fal.ai/model-apis/inference/queue, fal.ai/docs/inference-api/queue/*.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig
from runner.testing import EMULATOR_URL, ManualClock, emulator_transport

pytestmark = pytest.mark.anyio

QUEUE = f"{EMULATOR_URL}/fal"  # https://queue.fal.run
KEY = demo_credentials()["FAL_KEY"]
HEADERS = {"Authorization": f"Key {KEY}", "Content-Type": "application/json"}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

V4_T2I_FULL = {
    "prompt": "A trendy restaurant with a digital menu board displaying \"Seedream 4.0 is "
              "available on fal\" in elegant script, with diners enjoying their meals.",
    "image_size": {"height": 4096, "width": 4096},
    "num_images": 1,
    "max_images": 1,
    "enable_safety_checker": True,
    "enhance_prompt_mode": "standard",
}
V4_EDIT_FULL = {
    "prompt": "Dress the model in the clothes and hat. Add a cat to the scene and change the "
              "background to a Victorian era building.",
    "image_size": {"height": 2160, "width": 3840},
    "num_images": 1,
    "max_images": 1,
    "enable_safety_checker": True,
    "enhance_prompt_mode": "standard",
    "image_urls": [
        "https://storage.googleapis.com/falserverless/example_inputs/seedream4_edit_input_1.png",
        "https://storage.googleapis.com/falserverless/example_inputs/seedream4_edit_input_2.png",
        "https://storage.googleapis.com/falserverless/example_inputs/seedream4_edit_input_3.png",
        "https://storage.googleapis.com/falserverless/example_inputs/seedream4_edit_input_4.png",
    ],
}
V45_T2I_FULL = {
    "prompt": "A selfie of a cat, with the cat as the protagonist. The setting is twilight at "
              "the Eiffel Tower. The text \"Seedream 4.5 is on fal\" should be written on the "
              "picture at the top in clearly visible font and crisp lettering. The image has a "
              "4:3 aspect ratio",
    "image_size": "auto_2K",
    "num_images": 1,
    "max_images": 1,
    "sync_mode": False,
    "enable_safety_checker": True,
}
V45_EDIT_FULL = {
    "prompt": "Replace the product in Figure 1 with that in Figure 2. For the title copy the "
              "text in Figure 3 to the top of the screen, the title should have a clear "
              "contrast with the background but not be overly eye-catching.",
    "image_size": "auto_4K",
    "num_images": 1,
    "max_images": 1,
    "sync_mode": False,
    "enable_safety_checker": True,
    "image_urls": [
        "https://storage.googleapis.com/falserverless/example_inputs/seedreamv45/"
        f"seedream_v45_edit_input_{i}.png" for i in (1, 2, 3)],
}
RECIPES = [
    ("fal-ai/bytedance/seedream/v4/text-to-image", V4_T2I_FULL, (4096, 4096)),
    ("fal-ai/bytedance/seedream/v4/edit", V4_EDIT_FULL, (3840, 2160)),
    ("fal-ai/bytedance/seedream/v4.5/text-to-image", V45_T2I_FULL, (2048, 2048)),
    ("fal-ai/bytedance/seedream/v4.5/edit", V45_EDIT_FULL, (4096, 4096)),
]


@pytest.fixture
async def queue() -> AsyncIterator[tuple[httpx.AsyncClient, ManualClock]]:
    clock = ManualClock()
    transport = emulator_transport(EmulatorConfig(latency=2.0, seed=0), ["fal"], clock=clock)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client, clock


@pytest.mark.parametrize(("endpoint", "body", "size"), RECIPES,
                         ids=[r[0].split("seedream/")[1] for r in RECIPES])
async def test_each_model_pages_full_example_runs_to_its_images(
        queue: tuple[httpx.AsyncClient, ManualClock], endpoint: str, body: dict[str, Any],
        size: tuple[int, int]) -> None:
    client, clock = queue
    # curl -X POST https://queue.fal.run/<endpoint> -H "Authorization: Key $FAL_KEY" -d '…'
    submitted = await client.post(f"{QUEUE}/{endpoint}", headers=HEADERS, json=body)
    assert submitted.status_code == 200
    doc = submitted.json()
    assert set(doc) == {"request_id", "response_url", "status_url", "cancel_url",
                        "queue_position"}
    rid = doc["request_id"]
    assert re.fullmatch(UUID, rid)
    assert doc["response_url"] == f"{QUEUE}/fal-ai/bytedance/requests/{rid}"  # no subpath
    assert doc["status_url"] == doc["response_url"] + "/status"
    assert doc["cancel_url"] == doc["response_url"] + "/cancel"
    assert doc["queue_position"] == 0

    queued = await client.get(doc["status_url"], headers=HEADERS)
    assert queued.status_code == 202
    assert queued.json()["status"] == "IN_QUEUE"
    assert queued.json()["queue_position"] == 0
    assert queued.json()["logs"] is None
    clock.advance(1.0)
    running = await client.get(doc["status_url"], params={"logs": 1}, headers=HEADERS)
    assert running.status_code == 202
    assert running.json()["status"] == "IN_PROGRESS"
    assert next(e["message"] for e in running.json()["logs"]) == "Request queued"
    early = await client.get(doc["response_url"], headers=HEADERS)
    assert early.status_code == 400  # before completion the result is an error
    clock.advance(2.0)
    done = await client.get(doc["status_url"], headers=HEADERS)
    assert done.status_code == 200
    assert done.json()["status"] == "COMPLETED"
    assert "error" not in done.json()
    assert done.json()["metrics"]["inference_time"] == pytest.approx(1.5)

    result = await client.get(doc["response_url"], headers=HEADERS)
    assert result.status_code == 200
    out = result.json()
    assert set(out) == {"images", "seed"}
    [image] = out["images"]
    assert (image["width"], image["height"]) == size
    assert image["content_type"] == "image/png"
    png = await client.get(image["url"])
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png.content) == image["file_size"]


async def test_a_second_request_waits_behind_the_first(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = queue
    endpoint = f"{QUEUE}/fal-ai/bytedance/seedream/v4/text-to-image"
    await client.post(endpoint, headers=HEADERS, json={"prompt": "one"})
    second = (await client.post(endpoint, headers=HEADERS, json={"prompt": "two"})).json()
    assert second["queue_position"] == 1
    status = (await client.get(second["status_url"], headers=HEADERS)).json()
    assert status["queue_position"] == 1


async def test_cancel_answers_as_the_queue_page_says(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, clock = queue
    doc = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4.5/text-to-image",
                             headers=HEADERS, json={"prompt": "a cat"})).json()
    # curl -X PUT https://queue.fal.run/fal-ai/bytedance/requests/$REQUEST_ID/cancel
    cancel = await client.put(doc["cancel_url"], headers=HEADERS)
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    again = await client.put(doc["cancel_url"], headers=HEADERS)
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    status = (await client.get(doc["status_url"], headers=HEADERS)).json()
    assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")
    clock.advance(10)
    result = await client.get(doc["response_url"], headers=HEADERS)
    assert result.status_code == 499
    assert result.json()["error_type"] == "client_cancelled"
    gone = await client.put(f"{QUEUE}/fal-ai/bytedance/requests/nope/cancel", headers=HEADERS)
    assert (gone.status_code, gone.json()) == (404, {"status": "NOT_FOUND"})


async def test_an_invalid_input_is_queued_then_answers_fals_422(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = queue
    body = {"prompt": "a cat", "num_images": 9, "image_size": {"width": 0, "height": 1024},
            "enhance_prompt_mode": "slow", "image_urls": ["https://x.test/a.png"]}
    doc = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4/text-to-image",
                             headers=HEADERS, json=body)).json()
    status = await client.get(doc["status_url"], headers=HEADERS)
    assert status.status_code == 200
    assert status.json()["status"] == "COMPLETED"
    result = await client.get(doc["response_url"], headers=HEADERS)
    assert result.status_code == 422
    detail = result.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [
        (["body", "num_images"], "less_than_equal"),
        (["body", "image_size", "width"], "greater_than_equal"),
        (["body", "enhance_prompt_mode"], "enum"),
        (["body", "image_urls"], "extra_forbidden"),
    ]
    assert detail[0]["msg"] == "Input should be less than or equal to 6"
    assert detail[2]["msg"] == "Input should be 'standard' or 'fast'"
    missing = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4.5/edit",
                                 headers=HEADERS, json={"prompt": "x"})).json()
    answer = await client.get(missing["response_url"], headers=HEADERS)
    assert answer.json()["detail"] == [{"loc": ["body", "image_urls"], "msg": "Field required",
                                        "type": "missing",
                                        "url": "https://docs.fal.ai/errors#missing"}]


async def test_more_than_ten_references_use_the_last_ten_and_count_against_fifteen(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = queue
    urls = [f"https://x.test/{i}.png" for i in range(12)]
    ok = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4/edit", headers=HEADERS,
                            json={"prompt": "x", "image_urls": urls, "max_images": 5})).json()
    status = (await client.get(ok["status_url"], headers=HEADERS)).json()
    assert status["status"] == "IN_QUEUE"
    too_many = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4/edit",
                                  headers=HEADERS,
                                  json={"prompt": "y", "image_urls": urls,
                                        "max_images": 6})).json()
    detail = (await client.get(too_many["response_url"], headers=HEADERS)).json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(["body", "max_images"], "value_error")]


@pytest.mark.parametrize(("authorization", "detail"), [
    (None, "Invalid Key Authorization header format. Expected '<key_id>:<key_secret>'."),
    ("Bearer abc", "Invalid Key Authorization header format. Expected '<key_id>:<key_secret>'."),
    ("Key someone:else", "No user found for Key ID and Secret"),
])
async def test_credentials_are_refused_with_fals_401(
        queue: tuple[httpx.AsyncClient, ManualClock], authorization: str | None,
        detail: str) -> None:
    client, _ = queue
    headers = {"Authorization": authorization} if authorization else {}
    answer = await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4/text-to-image",
                               headers=headers, json={"prompt": "a cat"})
    assert (answer.status_code, answer.json()) == (401, {"detail": detail})


async def test_an_unknown_endpoint_or_request_is_not_found(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, _ = queue
    answer = await client.post(f"{QUEUE}/fal-ai/flux/dev", headers=HEADERS,
                               json={"prompt": "a cat"})
    assert answer.status_code == 404
    status = await client.get(f"{QUEUE}/fal-ai/bytedance/requests/nope/status", headers=HEADERS)
    assert (status.status_code, status.json()) == (404, {"detail": "Request not found"})


async def test_sync_mode_returns_the_images_as_data_uris(
        queue: tuple[httpx.AsyncClient, ManualClock]) -> None:
    client, clock = queue
    doc = (await client.post(f"{QUEUE}/fal-ai/bytedance/seedream/v4/text-to-image",
                             headers=HEADERS, json={"prompt": "a cat", "sync_mode": True})).json()
    clock.advance(10)
    images = (await client.get(doc["response_url"], headers=HEADERS)).json()["images"]
    assert images[0]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
