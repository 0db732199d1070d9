"""The emulated Wiro API: auth, Run validation, Task/Detail, billing, Cancel/Kill, files."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from runner.emulator.wiro import STAGES as WIRO_STAGES

pytestmark = pytest.mark.anyio

V45, V4, V3 = "bytedance/seedream-v4-5", "bytedance/seedream-v4", \
    "bytedance/text-to-image-seedream-v3"


def png_bytes(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


# --- auth ------------------------------------------------------------------------------------
async def test_valid_signature_runs_and_every_auth_failure_is_401(emulator: Any,
                                                                  sign: Callable[..., Any]
                                                                  ) -> None:
    async with emulator() as emu:
        body = {"prompt": "a kite"}
        url = f"/wiro/v1/Run/{V4}"
        ok = await emu.client.post(url, json=body, headers=sign())
        assert ok.status_code == 200
        assert ok.json()["result"] is True

        wrong_sig = {**sign(), "x-signature": "0" * 64}
        wrong_secret = sign(secret="not-the-secret")
        wrong_key = sign(key="someone-else")
        no_nonce = {k: v for k, v in sign().items() if k != "x-nonce"}
        no_headers: dict[str, str] = {}
        expected = {
            "wrong signature": (wrong_sig, "Project authorization is not valid."),
            "wrong secret": (wrong_secret, "Project authorization is not valid."),
            "wrong key": (wrong_key, "Project authorization is not founded."),
            "missing nonce": (no_nonce, "x-signature and x-nonce headers are required"),
            "no headers": (no_headers, "Project authorization is not founded."),
        }
        for case, (headers, message) in expected.items():
            response = await emu.client.post(url, json=body, headers=headers)
            assert response.status_code == 401, case
            doc = response.json()
            assert doc["result"] is False, case
            assert doc["errors"][0]["code"] == 0, case
            assert message in doc["errors"][0]["message"], case
        stats = await emu.stats()
        assert stats["tasks_created_total"] == 1
        assert stats["rejections"]["auth"] == len(expected)


async def test_a_reused_nonce_is_refused(emulator: Any, sign: Callable[..., Any]) -> None:
    async with emulator() as emu:
        headers = sign()
        first = await emu.client.post(f"/wiro/v1/Run/{V4}", json={"prompt": "x"},
                                      headers=headers)
        assert first.json()["result"] is True
        again = await emu.client.post("/wiro/v1/Task/Detail",
                                      json={"taskid": first.json()["taskid"]}, headers=headers)
        assert again.status_code == 401
        assert "nonce" in again.json()["errors"][0]["message"]
        assert (await emu.stats())["rejections"]["nonce_reused"] == 1


async def test_openssl_style_signature_line_is_accepted(emulator: Any,
                                                        sign: Callable[..., Any]) -> None:
    # the vendor pages pipe `openssl dgst` output straight into the header
    async with emulator() as emu:
        headers = sign()
        headers["x-signature"] = f"SHA2-256(stdin)= {headers['x-signature']}"
        response = await emu.client.post(f"/wiro/v1/Run/{V4}", json={"prompt": "x"},
                                         headers=headers)
        assert response.json()["result"] is True


async def test_every_wiro_endpoint_requires_auth(emulator: Any) -> None:
    async with emulator() as emu:
        for path in ("Task/Detail", "Task/Cancel", "Task/Kill", "File/Upload", f"Run/{V3}"):
            response = await emu.client.post(f"/wiro/v1/{path}", json={"taskid": "1"})
            assert response.status_code == 401, path


# --- Run ------------------------------------------------------------------------------------
async def test_run_answers_exactly_the_vendor_shape(emulator: Any) -> None:
    async with emulator() as emu:
        body = await emu.run_ok(V3, json={"prompt": "a lake", "size": "1024x1024"})
        assert list(body) == ["errors", "taskid", "socketaccesstoken", "result"]
        assert body["errors"] == []
        assert body["taskid"].isdigit()
        assert len(body["socketaccesstoken"]) == 30
        assert body["socketaccesstoken"].isalnum()


VIOLATIONS = [
    (V3, {"size": "999x999"}, "[size] must be one of"),
    (V3, {"guidanceScale": "strong"}, "[guidanceScale] must be integer or float"),
    (V3, {"seed": "1.5"}, "[seed] must be an integer"),
    (V3, {"seed": "-1"}, "[seed] must be between 0"),
    (V3, {"watermark": "yes"}, '[watermark] must be "true" or "false"'),
    (V3, {"watermark": "True"}, '[watermark] must be "true" or "false"'),
    (V3, {"inputImage": "https://example.com/a.png"}, "text-to-image only"),
    (V3, {"prompt": ""}, "Request parameter [prompt] required"),
    (V4, {"size": "big"}, "[size] must look like WIDTHxHEIGHT"),
    (V4, {"maxImages": "0"}, "[maxImages] must be between 1 and 15"),
    (V4, {"maxImages": "16"}, "[maxImages] must be between 1 and 15"),
    (V4, {"maxImages": "two"}, "[maxImages] must be integer or float"),
    (V4, {"inputImage": [f"https://example.com/{i}.png" for i in range(15)]},
     "takes at most 14 images (15 given)"),
    (V4, {"prompt": None}, "Request parameter [prompt] required"),
    (V45, {"width": "1024", "height": "1024"}, "must be between 3,686,400 and 16,777,216"),
    (V45, {"width": "16384", "height": "480"}, "aspect ratio 16384/480 must be between 1/16"),
    (V45, {"width": "wide"}, "[width] must be integer or float"),
    (V45, {"inputImage": [f"https://example.com/{i}.png" for i in range(5)], "maxImages": "11"},
     "input images (5) + maxImages (11) must be smaller than or equal to 15"),
    (V45, {"size": "2048x2048"}, "[size] is not supported by bytedance/seedream-v4-5"),
    (V45, {"watermark": "1"}, '[watermark] must be "true" or "false"'),
]


@pytest.mark.parametrize(("slug", "fields", "message"), VIOLATIONS,
                         ids=[f"{s.split('/')[1]}-{'-'.join(f)}" for s, f, _ in VIOLATIONS])
@pytest.mark.parametrize("encoding", ["multipart", "json"])
async def test_each_documented_violation_is_refused(emulator: Any, slug: str,
                                                    fields: dict[str, Any], message: str,
                                                    encoding: str) -> None:
    async with emulator() as emu:
        fields = {"prompt": "a valid prompt", **fields}
        fields = {k: v for k, v in fields.items() if v is not None}
        if encoding == "json":
            response = await emu.run(slug, json=fields)
        else:
            parts = [(k, (None, item)) for k, v in fields.items()
                     for item in (v if isinstance(v, list) else [v])]
            parts.append(("callbackUrl", (None, "")))
            response = await emu.run(slug, files=parts)
        assert response.status_code == 200
        doc = response.json()
        assert doc["result"] is False
        assert [e["code"] for e in doc["errors"]] == [0] * len(doc["errors"])
        assert any(message in e["message"] for e in doc["errors"]), doc
        assert (await emu.stats())["tasks_created_total"] == 0


async def test_unknown_model_is_code_1(emulator: Any) -> None:
    async with emulator() as emu:
        doc = (await emu.run("bytedance/seedream-v9", json={"prompt": "x"})).json()
        assert doc == {"result": False,
                       "errors": [{"code": 1, "message": "slug-owner-project-not-exist"}]}
        unknown = await emu.wiro("Task/Nothing", json={})
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0]["message"] == "Error parsing url."


async def test_json_body_sent_as_multipart_like_the_vendor_page(emulator: Any,
                                                                clock: Any) -> None:
    # The seedream-v4-5 page sends JSON under "Content-Type: multipart/form-data", with
    # numbers as JSON numbers, its own sample file names as inputImage, and a prose callbackUrl.
    body = json.dumps({
        "inputImage": ["bytedance-seedream-v4-5-input-2-1.jpg",
                       "bytedance-seedream-v4-5-input-2-2.jpg"],
        "prompt": "Replace the clothing in image 1 with the outfit from image 2.",
        "width": 2048, "height": 2048, "maxImages": 1, "watermark": "false",
        "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it "
                       "when the task is completed.",
    })
    async with emulator(clock=clock) as emu:
        run = await emu.run_ok(V45, content=body,
                               headers={"Content-Type": "multipart/form-data"})
        task = await emu.detail(run["taskid"])
        assert task["parameters"]["inputImage"] == ("bytedance-seedream-v4-5-input-2-1.jpg,"
                                                    "bytedance-seedream-v4-5-input-2-2.jpg")
        assert task["parameters"]["width"] == "2048"
        assert task["callbackurl"].startswith("You can provide")


async def test_multipart_files_and_urls_keep_their_order(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        parts = [
            ("inputImage", ("first.png", png_bytes("red"), "image/png")),
            ("inputImage", (None, "https://example.com/second.jpg")),
            ("inputImage", ("third.png", png_bytes("blue"), "image/png")),
            ("prompt", (None, "combine them")),
            ("size", (None, "2048x2048")),
            ("maxImages", (None, "1")),
            ("watermark", (None, "false")),
        ]
        run = await emu.run_ok(V4, files=parts)
        refs = (await emu.detail(run["taskid"]))["parameters"]["inputImage"].split(",")
        assert refs[1] == "https://example.com/second.jpg"
        assert refs[0].endswith("first.png")
        assert refs[2].endswith("third.png")
        for ref, colour in ((refs[0], "red"), (refs[2], "blue")):
            assert ref.startswith("http://emulator.test/files/")
            assert (await emu.client.get(ref)).content == png_bytes(colour)


# --- Task/Detail ----------------------------------------------------------------------------
async def test_status_progresses_through_the_lifecycle(emulator: Any, clock: Any,
                                                       seed_shapes: dict[str, set[str]]
                                                       ) -> None:
    async with emulator(clock=clock, latency=2.0) as emu:
        run = await emu.run_ok(V45, data={"prompt": "a tower", "width": "2560",
                                          "height": "1440", "maxImages": "3"})
        seen = []
        for _ in range(len(WIRO_STAGES)):
            task = await emu.detail(run["taskid"])
            seen.append(task["status"])
            assert task["outputs"] == []
            assert task["totalcost"] == "0"
            assert set(task) == seed_shapes["task"]
            clock.advance(2.0 / len(WIRO_STAGES))
        assert seen == list(WIRO_STAGES)
        clock.advance(0.01)
        task = await emu.detail(run["taskid"])
        assert task["status"] == "task_postprocess_end"
        assert task["pexit"] == "0"
        assert task["totalcost"] == "0.120000000000"  # 3 images × $0.04
        assert task["elapsedseconds"] == "2.0000"
        assert [o["name"] for o in task["outputs"]] == ["0.png", "1.png", "2.png"]
        for key, value in task.items():
            if key not in seed_shapes["non_string"]:
                assert isinstance(value, str), key
        for out in task["outputs"]:
            assert set(out) == seed_shapes["output"]
            assert out["contenttype"] == "image/png"
            assert out["uuid"] == task["uuid"]
            assert int(out["size"]) > 0
        assert int(task["size"]) == sum(int(o["size"]) for o in task["outputs"])
        assert int(task["postprocessendtime"]) >= int(task["starttime"]) >= int(
            task["createtime"])


async def test_detail_by_token_and_detail_errors(emulator: Any) -> None:
    async with emulator() as emu:
        run = await emu.run_ok(V3, json={"prompt": "x"})
        by_token = await emu.wiro("Task/Detail", json={"tasktoken": run["socketaccesstoken"]})
        body = by_token.json()
        assert body["total"] == "1"
        assert body["tasklist"][0]["id"] == run["taskid"]
        multipart = await emu.wiro("Task/Detail", files={"taskid": (None, run["taskid"])})
        assert multipart.json()["tasklist"][0]["socketaccesstoken"] == run["socketaccesstoken"]
        missing = (await emu.wiro("Task/Detail", json={})).json()
        assert missing["errors"] == [{"code": 0,
                                      "message": "taskid or socketaccesstoken is required"}]
        unknown = (await emu.wiro("Task/Detail", json={"taskid": "999"})).json()
        assert unknown["errors"] == [{"code": 1, "message": "There is no task yet."}]


@pytest.mark.parametrize(("slug", "fields", "price", "count", "size"), [
    (V45, {"width": "2560", "height": "1440", "maxImages": "2"}, "0.080000000000", 2, (256, 144)),
    (V4, {"size": "1024x2048"}, "0.030000000000", 1, (128, 256)),
    (V3, {"size": "1512x648"}, "0.030000000000", 1, (256, 110)),
])
async def test_outputs_cost_and_exact_sizes(emulator: Any, clock: Any, slug: str,
                                            fields: dict[str, str], price: str, count: int,
                                            size: tuple[int, int]) -> None:
    async with emulator(clock=clock) as emu:
        run = await emu.run_ok(slug, data={"prompt": f"test {slug}", **fields})
        clock.advance(5)
        task = await emu.detail(run["taskid"])
        assert task["totalcost"] == price
        assert len(task["outputs"]) == count
        for out in task["outputs"]:
            first = await emu.client.get(out["url"])
            second = await emu.client.get(out["url"])
            assert first.status_code == 200
            assert first.headers["content-type"] == "image/png"
            assert first.headers["content-length"] == out["size"]
            assert len(first.content) == int(out["size"])
            assert first.content == second.content
            assert Image.open(io.BytesIO(first.content)).size == size
        stats = await emu.stats()
        assert stats["tasks_billed"] == 1
        assert stats["billed_usd"] == pytest.approx(float(price))
        assert stats["downloads"] == 2 * count


async def test_full_size_and_padded_outputs(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, image_size="full", output_pad_bytes=300_000) as emu:
        run = await emu.run_ok(V3, data={"prompt": "a wide field", "size": "1280x720"})
        clock.advance(5)
        out = (await emu.detail(run["taskid"]))["outputs"][0]
        data = (await emu.client.get(out["url"])).content
        assert len(data) == int(out["size"]) >= 300_000
        assert Image.open(io.BytesIO(data)).size == (1280, 720)


# --- limits, balance, duplicates --------------------------------------------------------------
async def test_concurrency_limit_is_code_96_until_a_task_finishes(emulator: Any,
                                                                  clock: Any) -> None:
    async with emulator(clock=clock, concurrency=2, latency=1.0) as emu:
        for i in range(2):
            await emu.run_ok(V4, json={"prompt": f"job {i}"})
        busy = await emu.run(V4, json={"prompt": "job 2"})
        assert busy.status_code == 200
        error = busy.json()["errors"][0]
        assert busy.json()["result"] is False
        assert error["code"] == 96
        assert "concurrent task limit" in error["message"]
        clock.advance(1.0)
        await emu.run_ok(V4, json={"prompt": "job 2"})
        stats = await emu.stats()
        assert stats["rejections"]["concurrency"] == 1
        assert stats["inflight_tasks_peak"]["wiro"] == 2


async def test_insufficient_balance_is_code_97(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock, options={"wiro": {"balance_usd": 0.10}}) as emu:
        await emu.run_ok(V45, json={"prompt": "one", "maxImages": 2})  # $0.08 reserved
        broke = (await emu.run(V45, json={"prompt": "two"})).json()
        assert broke["errors"] == [{"code": 97, "message": "Insufficient balance"}]
        clock.advance(5)
        assert (await emu.stats())["balances"]["wiro_usd"] == pytest.approx(0.02)


async def test_duplicate_paid_counts_identical_billed_requests(emulator: Any,
                                                               clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        same = {"prompt": "the same", "size": "2048x2048", "maxImages": "1"}
        first = await emu.run_ok(V4, data=same)
        # the same request in another encoding, defaults spelt out or not: still the same ask
        second = await emu.run_ok(V4, json={"prompt": "the same", "watermark": "false"})
        await emu.run_ok(V4, json={"prompt": "different"})
        await emu.run_ok(V3, json={"prompt": "the same"})  # another model
        clock.advance(5)
        stats = await emu.stats()
        assert stats["tasks_billed"] == 4
        assert stats["duplicate_paid"] == 1
        [dup] = stats["duplicates"]
        assert dup["count"] == 2
        assert dup["model"] == V4
        assert dup["task_ids"] == [first["taskid"], second["taskid"]]


async def test_upload_then_url_counts_as_the_same_image(emulator: Any, clock: Any) -> None:
    async with emulator(clock=clock) as emu:
        image = png_bytes("green")
        up = await emu.wiro("File/Upload", files={"file": ("ref.png", image, "image/png")})
        item = up.json()["list"][0]
        assert up.json()["result"] is True
        assert {"id", "name", "size", "url"} <= set(item)
        assert item["size"] == str(len(image))
        assert item["name"] == "ref.png"
        assert (await emu.client.get(item["url"])).content == image
        await emu.run_ok(V4, files=[("inputImage", (None, item["url"])),
                                    ("prompt", (None, "edit it"))])
        await emu.run_ok(V4, files=[("inputImage", ("ref.png", image, "image/png")),
                                    ("prompt", (None, "edit it"))])
        clock.advance(5)
        assert (await emu.stats())["duplicate_paid"] == 1
        missing = (await emu.wiro("File/Upload", data={"folderid": "x"})).json()
        assert missing["errors"][0]["message"] == "Request files [file] required"


async def test_each_answer_names_the_host_its_request_reached(emulator: Any) -> None:
    # the server's address in an answer comes from each request's Host header, never from
    # an earlier request's (what is remembered of a URL is remembered per host)
    async with emulator() as emu:
        image = png_bytes("blue")
        urls = []
        for host in (None, "other.test:8080", None, "other.test:8080", "[::1]:9"):
            headers = {"host": host} if host else {}
            up = await emu.wiro("File/Upload", headers=headers,
                                files={"file": ("ref.png", image, "image/png")})
            urls.append(up.json()["list"][0]["url"])
        assert [u.split("/files/")[0] for u in urls] == [
            "http://emulator.test", "http://other.test:8080", "http://emulator.test",
            "http://other.test:8080", "http://[::1]:9"]
        stats = await emu.stats()
        assert stats["requests_by_endpoint"]["POST /wiro/v1/File/Upload"] == 5
        await emu.run(f"{V4}x")  # each path its own name
        assert (await emu.stats())["requests_by_endpoint"][f"POST /wiro/v1/Run/{V4}x"] == 1


# --- Cancel / Kill -------------------------------------------------------------------------
async def test_cancel_only_queued_tasks_and_kill_only_unfinished_ones(emulator: Any,
                                                                      clock: Any) -> None:
    async with emulator(clock=clock, latency=10.0) as emu:
        queued = await emu.run_ok(V4, json={"prompt": "to cancel"})
        cancel = (await emu.wiro("Task/Cancel", json={"taskid": queued["taskid"]})).json()
        assert cancel["result"] is True
        assert cancel["errors"] == []
        assert cancel["tasklist"][0]["status"] == "task_cancel"
        assert cancel["tasklist"][0]["canceltime"] != "0"
        assert (await emu.detail(queued["taskid"]))["status"] == "task_cancel"

        running = await emu.run_ok(V4, json={"prompt": "to kill"})
        clock.advance(5.5)  # stage 5 of 10: task_start
        assert (await emu.detail(running["taskid"]))["status"] == "task_start"
        refused = (await emu.wiro("Task/Cancel", json={"taskid": running["taskid"]})).json()
        assert refused["result"] is False
        assert refused["errors"] == [{"code": 1, "message": "Task is not in a cancellable state."}]
        killed = (await emu.wiro("Task/Kill",
                                 json={"socketaccesstoken": running["socketaccesstoken"]})).json()
        assert killed["result"] is True
        assert killed["tasklist"][0]["status"] == "task_cancel"
        assert killed["tasklist"][0]["totalcost"] == "0"

        done = await emu.run_ok(V4, json={"prompt": "finished"})
        clock.advance(11)
        late = (await emu.wiro("Task/Kill", json={"taskid": done["taskid"]})).json()
        assert late["result"] is False
        assert late["errors"][0]["code"] == 1
        assert late["errors"][0]["message"].startswith("Task could not be killed")
        stats = await emu.stats()
        assert stats["tasks_cancelled"] == 2
        assert stats["tasks_billed"] == 1  # cancelled tasks are not billed
        assert (await emu.detail(running["taskid"]))["outputs"] == []
