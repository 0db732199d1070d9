"""Shared pieces of seedbatch-demo's tests: the README's JSON examples, jobs, clients."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from seedbatch_demo.client import DemoProvider

from runner.jobs import ImageRef, Job

PACKAGE = Path(__file__).resolve().parent.parent
README = PACKAGE / "README.md"
BASE = "https://api.demo-images.test/v1"
KEY = "test-demo-key-1234"
_EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```json\n(?P<body>.*?)```", re.S)


def pytest_configure(config: pytest.Config) -> None:
    """These tests need the plugin installed (its entry point) and loaded."""
    from runner.plugins import missing_provider_message, registry

    if "demo" not in registry().providers:
        raise pytest.UsageError(f"seedbatch-demo's tests need the plugin installed and loaded: "
                                f"{missing_provider_message('demo')}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def readme_examples() -> dict[str, Any]:
    """Every ``<!-- example: name -->`` JSON block of the README, by name."""
    text = README.read_text(encoding="utf-8")
    return {m["name"]: json.loads(m["body"]) for m in _EXAMPLE.finditer(text)}


def example(name: str) -> Any:
    return readme_examples()[name]


def make_job(model: str = "demo/pattern-v1", prompt: str = "a teal chevron tile",
             params: Mapping[str, Any] | None = None,
             images: tuple[ImageRef, ...] = ()) -> Job:
    return Job(key="d" * 64, name="job", alias="tile", model=model, provider="demo",
               prompt=prompt, params=dict(params or {}), images=images)


Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> DemoProvider:
    return DemoProvider(base_url=BASE, api_key=KEY, transport=httpx.MockTransport(handler))
