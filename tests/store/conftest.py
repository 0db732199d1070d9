"""Stores for the tests: a local folder, and a real S3-compatible server (moto's, started
here on a free loopback port) reached through s3fs exactly as a bucket would be."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from store_support import AWS_ENV, S3Server, StoreSetup, s3_setup  # noqa: E402

from runner.emulator import EmulatorConfig, serve_in_thread  # noqa: E402


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store_setup(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSetup:
    if request.param == "local":
        return StoreSetup(url=str(tmp_path / "shared-store"))
    return s3_setup(request.getfixturevalue("s3"))


@pytest.fixture
def real_host() -> Iterator[Any]:
    """An emulator that does not say it is one: to seedbatch, a real endpoint."""
    with serve_in_thread(EmulatorConfig(latency=0.1, identify=False)) as server:
        yield server
