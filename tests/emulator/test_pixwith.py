"""The emulated Pixwith API: auth, create validation, get, credits, presigned uploads."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

pytestmark = pytest.mark.anyio


def create_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "a futuristic cyberpunk city at night",
        "model_id": "0-32",
        "options": {"prompt_optimization": True, "num_outputs": 1, "resolution": "2K",
                    "aspect_ratio": "16:9"},
    }
    options = overrides.pop("options", {})
    body.update(overrides)
    body["options"] = {**body["options"], **options}
    return body


def jpeg_bytes(size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), "orange").save(out, format="JPEG")
    return out.getvalue()


async def test_wrong_or_missing_key_is_invalid_api_key(emulator: Any) -> None:
    async with emulator() as emu:
        for key in ("key_wrong", ""):
            for path in ("task/create", "task/get", "task/get_credits", "task/pre_url"):
                response = await emu.pix(path, create_body(), key=key)
                assert response.status_code == 200  # Pixwith documents no status codes
                assert response.json() == {"code": 0, "message": "Invalid API KEY"}
        assert (await emu.stats())["tasks_created_total"] == 0


async def test_create_and_get_through_completion(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, latency=2.5) as emu:
        created = (await emu.pix("task/create", create_body(options={"num_outputs": 2}))).json()
        assert created["code"] == 1
        assert created["message"] == "success"
        assert set(created["data"]) == {"task_id", "estimated_time"}
        task_id = created["data"]["task_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", task_id)
        assert created["data"]["estimated_time"] == 3  # 2.5 s rounded up, an int

        running = (await emu.pix("task/get", {"task_id": task_id})).json()
        assert running == {"code": 1, "message": "success",
                           "data": {"task_id": task_id, "status": 1, "result_urls": []}}
        clock.advance(2.5)
        done = (await emu.pix("task/get", {"task_id": task_id})).json()["data"]
        assert done["status"] == 2
        assert len(done["result_urls"]) == 2
        for url in done["result_urls"]:
            assert url.startswith("http://emulator.test/files/")
            image = await emu.client.get(url)
            assert image.status_code == 200
            assert Image.open(io.BytesIO(image.content)).size == (256, 144)  # 16:9, small
            assert image.content == (await emu.client.get(url)).content
        credits = (await emu.pix("task/get_credits")).json()
        assert credits["code"] == 1
        assert credits["data"] == {"credits": 500 - 12}
        stats = await emu.stats()
        assert stats["tasks_created"] == {"pixwith": {"0-32": 1}}
        assert stats["billed_credits"] == 12
        unknown = (await emu.pix("task/get", {"task_id": "0" * 32})).json()
        assert unknown == {"code": 0, "message": "Task not found"}


def _drop_option(name: str) -> dict[str, Any]:
    body = create_body()
    del body["options"][name]
    return body


def _drop(name: str) -> dict[str, Any]:
    body = create_body()
    del body[name]
    return body


CREATE_VIOLATIONS = {
    "missing prompt": (_drop("prompt"), "prompt is required"),
    "blank prompt": (create_body(prompt="  "), "prompt is required"),
    "missing model_id": (_drop("model_id"), "model_id is required"),
    "other model_id": (create_body(model_id="0-31"), "Invalid model_id"),
    "missing options": (_drop("options"), "options is required"),
    "options not an object": (create_body() | {"options": "2K"}, "options must be an object"),
    "missing prompt_optimization": (_drop_option("prompt_optimization"),
                                    "options.prompt_optimization is required"),
    "prompt_optimization as text": (create_body(options={"prompt_optimization": "true"}),
                                    "options.prompt_optimization must be a boolean"),
    "num_outputs 0": (create_body(options={"num_outputs": 0}), "num_outputs must be"),
    "num_outputs 5": (create_body(options={"num_outputs": 5}), "num_outputs must be"),
    "num_outputs as text": (create_body(options={"num_outputs": "2"}), "num_outputs must be"),
    "resolution 8K": (create_body(options={"resolution": "8K"}), "options.resolution must be"),
    "aspect 5:4": (create_body(options={"aspect_ratio": "5:4"}), "options.aspect_ratio must be"),
    "unknown option": (create_body(options={"steps": 30}), "Unknown option 'steps'"),
    "no image urls": (create_body(image_urls=[]), "image_urls must be an array of 1 to 4"),
    "five image urls": (create_body(image_urls=[f"https://x.test/{i}.jpg" for i in range(5)]),
                        "image_urls must be an array of 1 to 4"),
    "ftp url": (create_body(image_urls=["ftp://x.test/a.jpg"]), "Invalid image url"),
    "not a url": (create_body(image_urls=["a.jpg"]), "Invalid image url"),
}


@pytest.mark.parametrize(("body", "message"), CREATE_VIOLATIONS.values(),
                         ids=CREATE_VIOLATIONS.keys())
async def test_create_refuses_each_violation(emulator: Any, body: dict[str, Any],
                                             message: str) -> None:
    async with emulator() as emu:
        doc = (await emu.pix("task/create", body)).json()
        assert doc["code"] == 0
        assert message in doc["message"]
        assert "data" not in doc
        assert (await emu.stats())["tasks_created_total"] == 0


async def test_defaults_and_image_to_image_are_accepted(emulator: Any) -> None:
    async with emulator() as emu:
        minimal = {"prompt": "p", "model_id": "0-32", "options": {"prompt_optimization": False}}
        assert (await emu.pix("task/create", minimal)).json()["code"] == 1
        edit = create_body(image_urls=["https://cdn.pixwith.ai/example.jpg"],
                           options={"resolution": "4K", "aspect_ratio": "1:1"})
        assert (await emu.pix("task/create", edit)).json()["code"] == 1
        garbage = await emu.client.post("/pixwith/api/task/create", content=b"not json",
                                        headers={"Api-Key": "key_00000000000000000000000000000000"})
        assert garbage.json()["code"] == 0


async def test_credits_not_enough_counts_running_tasks(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, options={"pixwith": {"credits": 20}}) as emu:
        ok = await emu.pix("task/create", create_body(options={"num_outputs": 2}))
        assert ok.json()["code"] == 1  # 12 of 20 credits now spoken for
        short = (await emu.pix("task/create", create_body(options={"num_outputs": 2}))).json()
        assert short == {"code": 0, "message": "Credits not enough"}
        clock.advance(5)
        assert (await emu.pix("task/get_credits")).json()["data"]["credits"] == 8
        assert (await emu.pix("task/create", create_body())).json()["code"] == 1


async def test_too_many_tasks_in_progress(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, concurrency=1) as emu:
        assert (await emu.pix("task/create", create_body())).json()["code"] == 1
        busy = (await emu.pix("task/create", create_body())).json()
        assert busy["code"] == 0
        assert "Too many tasks in progress" in busy["message"]
        clock.advance(5)
        assert (await emu.pix("task/create", create_body())).json()["code"] == 1


async def _pre_url(emu: Any, name: str = "ref.jpg", ctype: str = "image/jpeg") -> dict[str, Any]:
    doc = (await emu.pix("task/pre_url", {"image_name": name, "content_type": ctype})).json()
    assert doc["code"] == 1, doc
    return doc["data"]  # type: ignore[no-any-return]


async def test_pre_url_upload_round_trip(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        data = await _pre_url(emu)
        upload, image_url = data["upload_url"], data["image_url"]
        assert set(upload) == {"url", "fields"}
        assert {"key", "policy", "Content-Type", "x-amz-signature"} <= set(upload["fields"])
        assert (await emu.client.get(image_url)).status_code == 404  # nothing uploaded yet
        image = jpeg_bytes()
        posted = await emu.client.post(upload["url"], data=upload["fields"],
                                       files={"file": ("ref.jpg", image, "image/jpeg")})
        assert posted.status_code == 204
        served = await emu.client.get(image_url)
        assert served.content == image
        assert served.headers["content-type"] == "image/jpeg"
        # the URL then works as a reference image, and counts as that content
        created = await emu.pix("task/create", create_body(image_urls=[image_url]))
        assert created.json()["code"] == 1
        task = emu.state.tasks[("pixwith", created.json()["data"]["task_id"])]
        assert task.inputs[0].startswith("sha256:")
        # a presigned POST is good for one upload
        again = await emu.client.post(upload["url"], data=upload["fields"],
                                      files={"file": ("ref.jpg", image, "image/jpeg")})
        assert again.status_code == 403


@pytest.mark.parametrize(("name", "ctype"), [("ref.gif", "image/gif"), ("ref.webp", "image/webp"),
                                             ("ref", "image/png"), ("ref.png", "text/plain")])
async def test_pre_url_takes_jpg_jpeg_png_only(emulator: Any, name: str, ctype: str) -> None:
    async with emulator() as emu:
        doc = (await emu.pix("task/pre_url", {"image_name": name, "content_type": ctype})).json()
        assert doc == {"code": 0, "message": "Invalid image format"}


async def test_presigned_upload_expires_after_ten_minutes(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        upload = (await _pre_url(emu, "a.png", "image/png"))["upload_url"]
        clock.advance(601)
        late = await emu.client.post(upload["url"], data=upload["fields"],
                                     files={"file": ("a.png", b"\x89PNG....", "image/png")})
        assert late.status_code == 403
        assert "Policy expired" in late.text


async def test_presigned_upload_limits(emulator: Any) -> None:
    async with emulator() as emu:
        upload = (await _pre_url(emu, "big.png", "image/png"))["upload_url"]
        too_big = await emu.client.post(
            upload["url"], data=upload["fields"],
            files={"file": ("big.png", b"\0" * (10 * 1024 * 1024 + 1), "image/png")})
        assert too_big.status_code == 400
        assert "EntityTooLarge" in too_big.text
        tampered = {**upload["fields"], "x-amz-signature": "0" * 64}
        forged = await emu.client.post(upload["url"], data=tampered,
                                       files={"file": ("big.png", b"123", "image/png")})
        assert forged.status_code == 403
        assert "SignatureDoesNotMatch" in forged.text
        wrong_type = {**upload["fields"], "Content-Type": "image/jpeg"}
        refused = await emu.client.post(upload["url"], data=wrong_type,
                                        files={"file": ("big.png", b"123", "image/png")})
        assert refused.status_code == 403
        exact = await emu.client.post(
            upload["url"], data=upload["fields"],
            files={"file": ("big.png", b"\0" * (10 * 1024 * 1024), "image/png")})
        assert exact.status_code == 204
