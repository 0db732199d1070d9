# ruff: noqa: E501 - the recipes are the vendor page's curl commands, verbatim
"""The BytePlus API page's own curl examples, sent unchanged (but for the host, which is
the emulator's) to ``seedbatch emulate``'s BytePlus part over a loopback socket: text to
image, image to image, a streamed set. The examples are taken from repositories that copy
BytePlus's "Image generation API" page (third-party copies of a first-party page)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _vendor_tools() -> None:
    """The vendor pages' recipes run with the tools they name: never skipped."""
    missing = [t for t in ('curl',) if shutil.which(t) is None]
    assert not missing, (f"{', '.join(missing)} missing: apt-get install -y curl "
                         f"(.ci/run does)")

TEXT_TO_IMAGE = """curl $BASE/images/generations \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $ARK_API_KEY" \\
  -d '{
    "model": "seedream-4-0-250828",
    "prompt": "Vibrant close-up editorial portrait, model with piercing gaze, wearing a sculptural hat, rich color blocking, sharp focus on eyes, shallow depth of field, Vogue magazine cover aesthetic, shot on medium format, dramatic studio lighting.",
    "size": "2K",
    "sequential_image_generation": "disabled",
    "stream": false,
    "response_format": "url",
    "watermark": true
}'"""

IMAGE_TO_IMAGE = """curl $BASE/images/generations \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $ARK_API_KEY" \\
  -d '{
    "model": "seedream-4-0-250828",
    "prompt": "Generate a close-up image of a dog lying on lush grass.",
    "image": "https://ark-doc.tos-ap-southeast-1.bytepluses.com/doc_image/seedream4_imageToimage.png",
    "size": "2K",
    "sequential_image_generation": "disabled",
    "stream": false,
    "response_format": "url",
    "watermark": true
}'"""

STREAMED_SET = """curl $BASE/images/generations \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $ARK_API_KEY" \\
  -d '{
    "model": "seedream-4-5-251128",
    "prompt": "Generate a series of 3 images: a lighthouse at dawn, at noon and at night.",
    "size": "2K",
    "sequential_image_generation": "auto",
    "sequential_image_generation_options": {
        "max_images": 3
    },
    "stream": true,
    "response_format": "url",
    "watermark": false
}'"""


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_in_thread(EmulatorConfig(latency=0.1, seed=2)) as server:
        yield server.base_url("byteplus")


def run(recipe: str, base: str) -> str:
    env = {**os.environ, "BASE": base, "ARK_API_KEY": demo_credentials()["ARK_API_KEY"]}
    done = subprocess.run(["bash", "-c", recipe + " --silent --show-error"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.parametrize("recipe", [TEXT_TO_IMAGE, IMAGE_TO_IMAGE])
def test_the_pages_json_examples_answer_one_image(recipe: str, base: str) -> None:
    answer: dict[str, Any] = json.loads(run(recipe, base))
    assert answer["model"] == "seedream-4-0-250828"
    [item] = answer["data"]
    assert item["url"].startswith(base.split("/byteplus")[0] + "/files/")
    assert item["size"] == "2048x2048"
    assert answer["usage"]["generated_images"] == 1


def test_the_pages_streamed_set_answers_events_then_done(base: str) -> None:
    text = run(STREAMED_SET, base)
    events = [json.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.partial_succeeded"] * 3 + [
        "image_generation.completed"]
    assert [e["image_index"] for e in events[:3]] == [0, 1, 2]
    assert events[-1]["usage"]["generated_images"] == 3
    assert text.rstrip().endswith("data: [DONE]")
    assert "event: image_generation.completed" in text
