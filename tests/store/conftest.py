"""Stores for the tests: a local folder, and a real S3-compatible server (moto's, started
here on a free loopback port) reached through s3fs exactly as a bucket would be."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from runner.config import demo_credentials  # noqa: E402
from runner.emulator import EmulatorConfig, serve_in_thread  # noqa: E402
from runner.store.store import Store, open_store  # noqa: E402

# moto accepts any key; these are what the backend reads from its own environment
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class StoreSetup:
    """A store as a user would name it (``url``), the environment its backend reads
    (``env``), and how the test opens it in this process."""

    url: str
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    server: Any = None

    def open(self) -> Store:
        return open_store(self.url, self.options)


class S3Server:
    """moto's S3 server on a free loopback port; ``stop``/``start`` keep the bucket's
    content (moto holds it in this process)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._cls = ThreadedMotoServer
        self.server: Any = None
        self.endpoint = ""
        self.start()

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def s3_setup(server: S3Server) -> StoreSetup:
    import s3fs

    bucket = f"team-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    env = {**AWS_ENV, "FSSPEC_S3_ENDPOINT_URL": server.endpoint}
    return StoreSetup(url=f"s3://{bucket}/seedbatch", env=env,
                      options={"endpoint_url": server.endpoint, "skip_instance_cache": True},
                      server=server)


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


def host_env(server: Any | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the emulator's credentials, pointed at ``server``; no store
    variable leaks in from outside."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WIRO_", "PIXWITH_", "SEEDBATCH_STORE", "FSSPEC_"))}
    env.update(demo_credentials())
    if server is not None:
        env["WIRO_BASE_URL"] = server.wiro_base_url
        env["PIXWITH_BASE_URL"] = server.pixwith_base_url
    env.update(extra or {})
    return env
