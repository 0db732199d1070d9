"""Helpers of the store tests: stores (a folder; moto's S3 server on loopback), the command
line in a process of its own, run directories, and the emulator's task count."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli_support import report_of

from runner.config import demo_credentials
from runner.store.store import Store, open_store

MANIFEST = """\
version: 1
name: shared
matrix:
  i: [0, 1, 2]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "img-{{ i }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "picture number {{ i }}"
"""
JOBS = 6


def cli(*args: str, env: dict[str, str], cwd: Path | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False, cwd=cwd)


def tasks_created(server: Any) -> int:
    """Every task the emulator has been asked to create, over all its hosts."""
    created = server.stats()["tasks_created"]
    return sum(sum(by_model.values()) for by_model in created.values())


def only_run_dir(runs: Path) -> Path:
    dirs = sorted(d for d in runs.iterdir() if d.is_dir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def outputs_by_job(run_dir: Path) -> dict[str, list[bytes]]:
    """Job name → its output files' bytes, in index order."""
    found: dict[str, list[bytes]] = {}
    for job in report_of(run_dir)["jobs"]:
        found[job["name"]] = [(run_dir / o["path"]).read_bytes()
                              for o in sorted(job["outputs"], key=lambda o: o["index"])]
    return found


def write_manifest(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shared.yaml"
    path.write_text(MANIFEST + extra, encoding="utf-8")
    return path


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


def s3_setup(server: S3Server) -> StoreSetup:
    import s3fs

    bucket = f"team-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    env = {**AWS_ENV, "FSSPEC_S3_ENDPOINT_URL": server.endpoint}
    return StoreSetup(url=f"s3://{bucket}/seedbatch", env=env,
                      options={"endpoint_url": server.endpoint, "skip_instance_cache": True},
                      server=server)


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
