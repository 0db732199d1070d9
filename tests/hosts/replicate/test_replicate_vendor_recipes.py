# ruff: noqa: E501 - the recipes are the vendor pages' commands, verbatim
"""Replicate's own examples run unchanged against ``seedbatch emulate``'s API: the curl
command of the model's API page (``Prefer: wait`` included), the example inputs the model
page lists, and the HTTP reference's get and cancel calls. Only the host is swapped for
the emulator's address and the token for its demo one."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, EmulatorServer, serve_in_thread

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _vendor_tools() -> None:
    """The vendor pages' recipes run with the tools they name: never skipped."""
    missing = [t for t in ('curl',) if shutil.which(t) is None]
    assert not missing, (f"{', '.join(missing)} missing: apt-get install -y curl "
                         f"(.ci/run does)")

# replicate.com/bytedance/seedream-4 (API tab, HTTP), as the page prints it
MODEL_PAGE_CURL = """\
curl --silent --show-error https://api.replicate.com/v1/models/bytedance/seedream-4/predictions \\
	--request POST \\
	--header "Authorization: Bearer $REPLICATE_API_TOKEN" \\
	--header "Content-Type: application/json" \\
	--header "Prefer: wait" \\
	--data @- <<'EOM'
{
	"input": {
      "prompt": "a photo of a store front called \\"Seedream 4\\", it sells books, a poster in the window says \\"Seedream 4 now on Replicate\\"",
      "aspect_ratio": "4:3"
	}
}
EOM
"""

# The model page's examples ("Example inputs and outputs"): inputs exactly as listed
EXAMPLE_SEQUENTIAL = {
    "size": "2K",
    "width": 2048,
    "height": 2048,
    "prompt": "a selection of photos of this woman looking at a store front and perusing a book shop that's called \"Seedream 4\", it sells books, a poster in the window says \"Seedream 4 now on Replicate\"",
    "max_images": 4,
    "image_input": [
        "https://replicate.delivery/pbxt/NgNa2k87ua7v4G2Z51JpiWFcjXoTV1wPVQ86YjmLPfREnWfD/0_1.webp"
    ],
    "aspect_ratio": "4:3",
    "sequential_image_generation": "auto",
}
EXAMPLE_SINGLE = {
    "size": "2K",
    "width": 2048,
    "height": 2048,
    "prompt": "a photo of a store front called \"Seedream 4\", it sells books, a poster in the window says \"Seedream 4 now on Replicate\"",
    "max_images": 1,
    "image_input": [],
    "aspect_ratio": "4:3",
    "sequential_image_generation": "disabled",
}

# The HTTP reference: predictions.get and predictions.cancel
GET_CURL = """curl -s \\
  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\
  https://api.replicate.com/v1/predictions/{id}"""
CANCEL_CURL = """curl -s -X POST \\
  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\
  https://api.replicate.com/v1/predictions/{id}/cancel"""


def run(server: EmulatorServer, script: str) -> dict[str, Any]:
    script = script.replace("https://api.replicate.com/v1", server.replicate_base_url)
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin",
           "REPLICATE_API_TOKEN": demo_credentials()["REPLICATE_API_TOKEN"]}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def create_with(server: EmulatorServer, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"input": payload})
    return run(server, f"""curl -s -X POST \\
  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d @- https://api.replicate.com/v1/models/{model}/predictions <<'EOM'
{body}
EOM""")


@pytest.fixture(scope="module")
def fast() -> Iterator[EmulatorServer]:
    with serve_in_thread(EmulatorConfig(latency=0.3, seed=1)) as server:
        yield server


def test_the_model_pages_curl_waits_and_answers_the_finished_prediction(
        fast: EmulatorServer) -> None:
    doc = run(fast, MODEL_PAGE_CURL)
    assert doc["status"] == "succeeded"  # Prefer: wait held the answer until the end
    assert doc["model"] == "bytedance/seedream-4"
    assert doc["input"]["aspect_ratio"] == "4:3"
    [url] = doc["output"]
    assert url.startswith(fast.url)
    task = fast.app.state.emulator.tasks[("replicate", doc["id"])]
    assert (task.width, task.height) == (2368, 1776)  # 2K at 4:3 (the area of 2048², sides rounded to 8)


def test_the_model_pages_example_inputs_are_accepted(fast: EmulatorServer) -> None:
    single = create_with(fast, "bytedance/seedream-4", EXAMPLE_SINGLE)
    several = create_with(fast, "bytedance/seedream-4", EXAMPLE_SEQUENTIAL)
    assert single["status"] == several["status"] == "starting"
    assert several["input"] == EXAMPLE_SEQUENTIAL
    tasks = fast.app.state.emulator.tasks
    assert tasks[("replicate", several["id"])].images == 4  # up to max_images
    assert tasks[("replicate", single["id"])].images == 1
    done = run(fast, f"sleep 1; {GET_CURL.format(id=several['id'])}")
    assert done["status"] == "succeeded"
    assert len(done["output"]) == 4


def test_the_http_references_get_and_cancel(fast: EmulatorServer) -> None:
    fast.app.state.emulator.frozen_at = fast.app.state.emulator.now()  # nothing ends
    try:
        created = create_with(fast, "bytedance/seedream-4.5", {"prompt": "a lantern"})
        got = run(fast, GET_CURL.format(id=created["id"]))
        assert got["status"] == "starting"
        cancelled = run(fast, CANCEL_CURL.format(id=created["id"]))
        assert cancelled["status"] == "canceled"
        assert cancelled["completed_at"] is not None
        assert run(fast, GET_CURL.format(id=created["id"]))["status"] == "canceled"
    finally:
        fast.app.state.emulator.frozen_at = None
