# ruff: noqa: E501 - the recipes are the vendor pages' one-line commands, verbatim
"""The vendor pages' own recipes — bash, openssl and curl — work against the emulator.

Header preparation is the vendor's, character for character (including piping
``openssl dgst`` straight into the header), except that the nonce is
``$(date +%s%N)``: the pages allow "unix time or any random integer value", and the
emulator, like the real API, refuses a nonce used twice, which ``date +%s`` would repeat
within one second.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, EmulatorServer, serve_in_thread

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _vendor_tools() -> None:
    """The vendor pages' recipes run with the tools they name: never skipped."""
    missing = [t for t in ('curl', 'openssl') if shutil.which(t) is None]
    assert not missing, (f"{', '.join(missing)} missing: apt-get install -y curl openssl "
                         f"(.ci/run does)")

HEADER_PREP = """
export YOUR_API_KEY="{key}";
export YOUR_API_SECRET="{secret}";
# unix time or any random integer value
export NONCE=$(date +%s%N);
# hmac-SHA256 (YOUR_API_SECRET+Nonce) with YOUR_API_KEY
export SIGNATURE="$(echo -n "${{YOUR_API_SECRET}}${{NONCE}}" | openssl dgst -sha256 -hmac "${{YOUR_API_KEY}}")";
"""


def bash(script: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=30, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wiro_curl(server: EmulatorServer, curl: str, cwd: Path | None = None) -> dict[str, Any]:
    prep = HEADER_PREP.format(key=demo_credentials()["WIRO_API_KEY"],
                              secret=demo_credentials()["WIRO_API_SECRET"])
    curl = curl.replace("https://api.wiro.ai/v1", server.wiro_base_url)
    return json.loads(bash(prep + curl.replace("curl ", "curl -sS ", 1), cwd=cwd))


@pytest.fixture(scope="module")
def fast() -> Iterator[EmulatorServer]:
    cfg = EmulatorConfig(latency=0.3, credentials=demo_credentials())
    with serve_in_thread(cfg) as server:
        yield server


def detail(server: EmulatorServer, taskid: str) -> dict[str, Any]:
    """The v4-5 page's Task/Detail recipe (multipart header, JSON body), until terminal."""
    for _ in range(60):
        doc = wiro_curl(server, f"""curl -X POST "https://api.wiro.ai/v1/Task/Detail" -H "Content-Type: multipart/form-data" -H "x-api-key: ${{YOUR_API_KEY}}" -H "x-nonce: ${{NONCE}}" -H "x-signature: ${{SIGNATURE}}" -d '{{ "taskid": "{taskid}" }}';""")
        task = doc["tasklist"][0]
        if task["status"] in ("task_postprocess_end", "task_cancel"):
            return task  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError("task did not finish")


def check_outputs(task: dict[str, Any], tmp_path: Path) -> None:
    assert task["pexit"] == "0"
    for out in task["outputs"]:
        target = tmp_path / out["name"]
        bash(f'curl -sS -o "{target}" "{out["url"]}"')
        assert target.stat().st_size == int(out["size"])
        assert Image.open(target).format == "PNG"


def test_seedream_v4_multipart_recipe_with_files_and_urls(fast: EmulatorServer,
                                                           tmp_path: Path) -> None:
    (tmp_path / "path" / "to").mkdir(parents=True)
    for i, colour in enumerate(("red", "green"), start=1):
        out = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(out, format="JPEG")
        (tmp_path / "path" / "to" / f"image{i}.jpg").write_bytes(out.getvalue())
    # Option 3 of the page, comment lines removed as it instructs
    run = wiro_curl(fast, """curl -X POST "https://api.wiro.ai/v1/Run/bytedance/seedream-v4" \\
-H "x-api-key: ${YOUR_API_KEY}" \\
-H "x-nonce: ${NONCE}" \\
-H "x-signature: ${SIGNATURE}" \\
-F "inputImage=@path/to/image1.jpg" \\
-F "inputImage=https://example.com/image2.jpg" \\
-F "inputImage=@path/to/image2.jpg" \\
-F "prompt=A serene desert landscape at dusk, a lone traveler riding a camel toward ancient ruins, golden sky with stars starting to appear." \\
-F "size=2048x2048" \\
-F "maxImages=1" \\
-F "watermark=false" \\
-F "callbackUrl=Optional: Webhook URL for task completion notifications";
""", cwd=tmp_path)
    assert run["result"] is True
    assert list(run) == ["errors", "taskid", "socketaccesstoken", "result"]
    # the page's Task/Detail recipe for this model: by task token, JSON
    time.sleep(0.4)
    token_doc = wiro_curl(fast, f"""curl -X POST "https://api.wiro.ai/v1/Task/Detail" \\
-H "Content-Type: application/json" \\
-H "x-api-key: ${{YOUR_API_KEY}}" \\
-H "x-nonce: ${{NONCE}}" \\
-H "x-signature: ${{SIGNATURE}}" \\
-d '{{
"tasktoken": "{run['socketaccesstoken']}"
}}';""")
    task = token_doc["tasklist"][0]
    assert token_doc["total"] == "1"
    assert task["status"] == "task_postprocess_end"
    refs = task["parameters"]["inputImage"].split(",")
    assert refs[1] == "https://example.com/image2.jpg"
    assert [Path(r).name.split("-", 1)[1] for r in (refs[0], refs[2])] == ["image1.jpg",
                                                                           "image2.jpg"]
    assert task["totalcost"] == "0.030000000000"
    check_outputs(task, tmp_path)


def test_seedream_v4_5_json_recipe(fast: EmulatorServer, tmp_path: Path) -> None:
    run = wiro_curl(fast, """curl -X POST "https://api.wiro.ai/v1/Run/bytedance/seedream-v4-5" -H "Content-Type: multipart/form-data" -H "x-api-key: ${YOUR_API_KEY}" -H "x-nonce: ${NONCE}" -H "x-signature: ${SIGNATURE}" -d '{ "inputImage": [ "bytedance-seedream-v4-5-input-2-1.jpg", "bytedance-seedream-v4-5-input-2-2.jpg" ], "prompt": "Replace the clothing in image 1 with the outfit from image 2.", "width": 2048, "height": 2048, "maxImages": 1, "watermark": "false", "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the task is completed." }';""")
    assert run["result"] is True
    task = detail(fast, run["taskid"])
    assert task["totalcost"] == "0.040000000000"
    check_outputs(task, tmp_path)


def test_seedream_v3_json_recipe(fast: EmulatorServer, tmp_path: Path) -> None:
    run = wiro_curl(fast, """curl -X POST "https://api.wiro.ai/v1/Run/bytedance/text-to-image-seedream-v3" -H "Content-Type: multipart/form-data" -H "x-api-key: ${YOUR_API_KEY}" -H "x-nonce: ${NONCE}" -H "x-signature: ${SIGNATURE}" -d '{ "prompt": "A tranquil mountain lake at dawn, mist hovering above the water, pine trees reflected perfectly, photorealistic scenery.", "size": "1024x1024", "watermark": "false", "guidanceScale": 1, "seed": 1, "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the task is completed." }';""")
    assert run["result"] is True
    task = detail(fast, run["taskid"])
    assert task["totalcost"] == "0.030000000000"
    assert task["parameters"]["guidanceScale"] == "1"
    check_outputs(task, tmp_path)


def test_cancel_and_kill_recipes() -> None:
    cfg = EmulatorConfig(latency=30.0, credentials={
        var: demo_credentials()[var] for var in ("WIRO_API_KEY", "WIRO_API_SECRET")})
    with serve_in_thread(cfg) as server:
        run_recipe = """curl -X POST "https://api.wiro.ai/v1/Run/bytedance/text-to-image-seedream-v3" -H "Content-Type: multipart/form-data" -H "x-api-key: ${YOUR_API_KEY}" -H "x-nonce: ${NONCE}" -H "x-signature: ${SIGNATURE}" -d '{ "prompt": "queued", "size": "1024x1024" }';"""
        queued = wiro_curl(server, run_recipe)
        cancel = wiro_curl(server, f"""curl -X POST "https://api.wiro.ai/v1/Task/Cancel" -H "Content-Type: multipart/form-data" -H "x-api-key: ${{YOUR_API_KEY}}" -H "x-nonce: ${{NONCE}}" -H "x-signature: ${{SIGNATURE}}" -d '{{ "taskid": "{queued['taskid']}" }}';""")
        assert cancel["result"] is True
        assert cancel["tasklist"][0]["status"] == "task_cancel"
        running = wiro_curl(server, run_recipe)
        kill = wiro_curl(server, f"""curl -X POST "https://api.wiro.ai/v1/Task/Kill" -H "Content-Type: multipart/form-data" -H "x-api-key: ${{YOUR_API_KEY}}" -H "x-nonce: ${{NONCE}}" -H "x-signature: ${{SIGNATURE}}" -d '{{ "socketaccesstoken": "{running['socketaccesstoken']}" }}';""")
        assert kill["result"] is True
        assert kill["tasklist"][0]["id"] == running["taskid"]
        assert kill["tasklist"][0]["status"] == "task_cancel"
        assert server.stats()["tasks_cancelled"] == 2


def test_wrong_secret_in_the_recipe_is_refused(fast: EmulatorServer) -> None:
    prep = HEADER_PREP.format(key=demo_credentials()["WIRO_API_KEY"], secret="XXXXXXXXX")
    out = bash(prep + f"""curl -sS -w '\\n%{{http_code}}' -X POST "{fast.wiro_base_url}/Task/Detail" -H "x-api-key: ${{YOUR_API_KEY}}" -H "x-nonce: ${{NONCE}}" -H "x-signature: ${{SIGNATURE}}" -d '{{"taskid": "1"}}'""")
    body, status = out.rsplit("\n", 1)
    assert status == "401"
    assert json.loads(body)["errors"][0]["message"] == "Project authorization is not valid."


def test_pixwith_json_recipes(fast: EmulatorServer, tmp_path: Path) -> None:
    key = demo_credentials()["PIXWITH_API_KEY"]  # the vendor page's published test key
    created = json.loads(bash(f"""curl -sS -X POST "{fast.pixwith_base_url}/task/create" \\
  -H "Content-Type: application/json" -H "Api-Key: {key}" \\
  -d '{{
"prompt": "transform into anime style",
"image_urls": ["https://cdn.pixwith.ai/example.jpg"],
"model_id": "0-32",
"options": {{
"prompt_optimization": true,
"num_outputs": 1,
"resolution": "4K",
"aspect_ratio": "1:1"
}}
}}'"""))
    assert created["code"] == 1
    assert created["message"] == "success"
    task_id = created["data"]["task_id"]
    time.sleep(0.4)
    got = json.loads(bash(f"""curl -sS -X POST "{fast.pixwith_base_url}/task/get" \\
  -H "Content-Type: application/json" -H "Api-Key: {key}" -d '{{"task_id": "{task_id}"}}'"""))
    assert got["data"]["status"] == 2
    [url] = got["data"]["result_urls"]
    target = tmp_path / "pix.png"
    bash(f'curl -sS -o "{target}" "{url}"')
    assert Image.open(target).size == (256, 256)
    credits = json.loads(bash(f"""curl -sS -X POST "{fast.pixwith_base_url}/task/get_credits" \\
  -H "Api-Key: {key}" """))
    assert credits["data"]["credits"] <= 500 - 6
