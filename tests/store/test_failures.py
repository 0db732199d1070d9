"""A store that fails never fails a run: the uploads are reported, and ``push`` finishes
them. Failures are forced (the S3 server stopped at a chosen moment, or a store that
fails from a chosen call on), never waited for."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from store_support import (
    S3Server,
    cli,
    host_env,
    report_of,
    s3_setup,
    tasks_created,
    write_manifest,
)

from runner import api
from runner.errors import StoreError
from runner.execute.progress import NullProgress
from runner.store.store import Store, open_store

WIRO_ONLY = """\
version: 1
name: wiro-three
matrix:
  i: [0, 1, 2]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
jobs:
  - name: "w-{{ i }}"
    model: v4
    prompt: "picture number {{ i }}"
"""


class StopAt(NullProgress):
    """Calls ``action`` when the ``n``-th job succeeds (in the run's loop, before that
    job's upload is queued)."""

    def __init__(self, n: int, action: Any) -> None:
        self.n, self.action, self.seen = n, action, 0

    def job_state(self, name: str, state: str, detail: str = "") -> None:
        if state == "succeeded":
            self.seen += 1
            if self.seen == self.n:
                self.action()


@pytest.mark.e2e
def test_a_store_that_stops_mid_run_leaves_the_run_green_and_push_completes_it(
        tmp_path: Path, real_host: Any, s3: S3Server) -> None:
    setup = s3_setup(s3)
    manifest = tmp_path / "w.yaml"
    manifest.write_text(WIRO_ONLY, encoding="utf-8")
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=host_env(real_host),
                     concurrency=1, store=setup.open(), progress=StopAt(2, s3.stop))
    assert result.exit_code == 0
    assert result.succeeded == 3
    assert tasks_created(real_host) == 3
    store = report_of(result.run_dir)["run"]["store"]
    # the 2nd and 3rd jobs were downloaded after the server stopped: they cannot be in it
    assert store["jobs_stored"] + store["jobs_not_stored"] == 3
    assert store["jobs_not_stored"] >= 2
    assert {"w-1", "w-2"} <= set(store["not_stored"])
    assert store["error"]
    line = next(m for m in result.messages if "not stored" in m)
    assert f"seedbatch push {result.run_dir}" in line
    assert setup.url in line
    md = cli("report", str(result.run_dir), "--format", "md", env=host_env(None))
    assert "not stored**" in md.stdout

    s3.start()  # back (on a new port), with everything it held
    pushed = cli("push", str(result.run_dir), "--store", setup.url,
                 env=host_env(None, {**setup.env, "FSSPEC_S3_ENDPOINT_URL": s3.endpoint}))
    assert pushed.returncode == 0, pushed.stderr
    assert "3 of 3 jobs stored" in pushed.stdout
    after = report_of(result.run_dir)["run"]["store"]
    assert (after["jobs_stored"], after["jobs_not_stored"], after["error"]) == (3, 0, None)
    fresh = open_store(setup.url, {"endpoint_url": s3.endpoint, "skip_instance_cache": True})
    assert all(fresh.newest(job["key"]) is not None
               for job in report_of(result.run_dir)["jobs"])


class FailingFrom(Store):
    """A local store whose object writes fail from the ``n``-th call on."""

    def __init__(self, root: Path, n: int) -> None:
        base = open_store(str(root))
        super().__init__(base.fs, base.root, base.url)
        self.n, self.calls = n, 0
        self._lock = threading.Lock()

    def put_object(self, data: bytes, sha256: str) -> bool:
        with self._lock:
            self.calls += 1
            failing = self.calls >= self.n
        if failing:
            raise StoreError(f"{self.url}: injected failure")
        return super().put_object(data, sha256)


def _names(meta: Mapping[str, Any]) -> set[str]:
    return set(meta["not_stored"])


def test_uploads_that_fail_part_way_are_counted_exactly_and_push_stores_the_rest(
        tmp_path: Path, real_host: Any) -> None:
    root = tmp_path / "store"
    manifest = write_manifest(tmp_path / "m")
    flaky = FailingFrom(root, 3)  # two object writes succeed, every later one fails
    result = api.run(manifest, runs_dir=tmp_path / "runs", env=host_env(real_host),
                     store=flaky)
    assert result.exit_code == 0
    assert result.succeeded == 6
    meta = report_of(result.run_dir)["run"]["store"]
    assert (meta["jobs_stored"], meta["jobs_not_stored"]) == (2, 4)
    assert "injected failure" in meta["error"]
    assert len(list((root / "jobs").rglob("*.json"))) == 2

    pushed = api.push(result.run_dir, store=str(root), env={})
    assert pushed.summary.failed == {}
    assert pushed.summary.stored == 6
    assert len(list((root / "jobs").rglob("*.json"))) == 6
    meta = report_of(result.run_dir)["run"]["store"]
    assert (meta["jobs_stored"], meta["jobs_not_stored"]) == (6, 0)
    again = api.push(result.run_dir, store=str(root), env={})
    assert again.summary.objects_written == 0
    assert again.summary.stored == 6


def test_a_store_that_cannot_be_read_only_means_every_job_runs(
        tmp_path: Path, real_host: Any) -> None:
    manifest = write_manifest(tmp_path / "m")

    class Unreadable(FailingFrom):
        def record_names(self, key: str) -> list[str]:
            raise StoreError(f"{self.url}: injected read failure")

    result = api.run(manifest, runs_dir=tmp_path / "runs", env=host_env(real_host),
                     store=Unreadable(tmp_path / "store", 10_000))
    assert result.exit_code == 0
    assert result.succeeded == 6
    assert result.from_store == 0
    assert any("store not read" in m and "injected read failure" in m
               for m in result.messages)


def test_a_damaged_object_is_never_placed_the_job_is_submitted_instead(
        tmp_path: Path, real_host: Any) -> None:
    root = tmp_path / "store"
    first = write_manifest(tmp_path / "a")
    made = api.run(first, runs_dir=tmp_path / "a" / "runs", env=host_env(real_host),
                   store=str(root), only="img-0-v4")
    assert made.exit_code == 0
    (obj,) = [p for p in (root / "objects").rglob("*") if p.is_file()]
    obj.write_bytes(b"not the image")
    second = write_manifest(tmp_path / "b")
    rebuilt = api.run(second, runs_dir=tmp_path / "b" / "runs", env=host_env(real_host),
                      store=str(root), only="img-0-v4")
    assert rebuilt.exit_code == 0
    assert rebuilt.from_store == 0
    assert tasks_created(real_host) == 2
    assert any("img-0-v4: not placed from the store" in m and "damaged" in m
               for m in rebuilt.messages)
