"""The store itself: layout, create-once objects, records kept per run (newest wins),
many writers at once, where the store is, and credentials kept out of it."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
from store_support import StoreSetup, cli, host_env, write_manifest

from runner.errors import ConfigError, StoreError
from runner.store.store import (
    StoredOutput,
    StoreRecord,
    open_store,
    shown,
    store_location,
)
from runner.store.upload import Uploader, UploadItem, UploadPolicy

KEYS = [hashlib.sha256(f"job {i}".encode()).hexdigest() for i in range(12)]


def _record(key: str, run_id: str, data: bytes, made_at: str) -> StoreRecord:
    sha = hashlib.sha256(data).hexdigest()
    return StoreRecord(key=key, name=f"job-{key[:6]}", model="wiro/seedream-v4",
                       provider="wiro", run_id=run_id, made_at=made_at, task_id="t-1",
                       cost_usd=0.03,
                       outputs=(StoredOutput(0, sha, len(data), "image/png", 8, 8),))


def test_objects_are_addressed_by_content_written_once_and_checked_on_read(
        store_setup: StoreSetup) -> None:
    store = store_setup.open()
    data = b"\x89PNG pretend image"
    sha = hashlib.sha256(data).hexdigest()
    assert store.object_path(sha).endswith(f"objects/sha256/{sha[:2]}/{sha[2:]}")
    assert store.put_object(data, sha) is True
    assert store.put_object(data, sha) is False  # already there: never overwritten
    assert store.get_object(sha) == data
    with pytest.raises(StoreError, match="hash differently"):
        store.put_object(b"other bytes", sha)
    store.fs.pipe_file(store.object_path(sha), b"tampered")
    with pytest.raises(StoreError, match="damaged"):
        store.get_object(sha)


def test_every_run_keeps_its_record_and_the_newest_wins(store_setup: StoreSetup) -> None:
    store = store_setup.open()
    key = KEYS[0]
    old = _record(key, "20260101T000000Z-batch-aaaaaa", b"old", "2026-01-01T00:00:01.000Z")
    new = _record(key, "20260301T000000Z-batch-bbbbbb", b"new", "2026-03-01T00:00:01.000Z")
    assert store.put_record(new) is True
    assert store.put_record(old) is True  # pushed later, made earlier
    assert store.put_record(old) is False
    assert [r.run_id for r in store.records(key)] == [old.run_id, new.run_id]
    newest = store.newest(key)
    assert newest is not None
    assert newest.run_id == new.run_id
    assert store.newest(KEYS[1]) is None
    with pytest.raises(StoreError, match="emulated"):
        store.put_record(StoreRecord(**{**_fields(new), "emulated": True}))


def _fields(record: StoreRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__ if name != "extra"}


def test_two_writers_pushing_the_same_keys_lose_no_record_and_leave_no_partial_object(
        store_setup: StoreSetup, tmp_path: Path) -> None:
    files = []
    for i, key in enumerate(KEYS):
        path = tmp_path / f"{i}.png"
        path.write_bytes(f"image of job {i}".encode() * 500)
        files.append((key, path))
    barrier = threading.Barrier(2)
    summaries = []

    def writer(run_id: str) -> None:
        items = [UploadItem(_record(key, run_id, path.read_bytes(),
                                    f"2026-05-01T00:00:0{run_id[-1]}.000Z"), (path,))
                 for key, path in files]
        uploader = Uploader(store_setup.open(), UploadPolicy(workers=4))
        barrier.wait()
        summaries.append(uploader.run(items))

    threads = [threading.Thread(target=writer, args=(f"20260501T000000Z-b-{n}",))
               for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)  # a hang guard
    assert [s.failed for s in summaries] == [{}, {}]
    # every object written exactly once between them, every record of both runs kept
    assert sum(s.objects_written for s in summaries) == len(KEYS)
    store = store_setup.open()
    for key, path in files:
        assert sorted(r.run_id for r in store.records(key)) == [
            "20260501T000000Z-b-1", "20260501T000000Z-b-2"]
        assert store.get_object(hashlib.sha256(path.read_bytes()).hexdigest()) == \
            path.read_bytes()
    leftovers = [p for p in store.fs.find(store.root) if p.rsplit("/", 1)[-1].startswith(".")]
    assert leftovers == []


def test_the_flag_beats_the_environment_which_beats_the_manifest(tmp_path: Path) -> None:
    env = {"SEEDBATCH_STORE": "s3://from-env/x"}
    assert store_location("gs://flag/y", env, "/m/store") == "gs://flag/y"
    assert store_location(None, env, "/m/store") == "s3://from-env/x"
    assert store_location(None, {}, "/m/store") == "/m/store"
    assert store_location(None, {}, None) is None
    assert store_location("rel/store", {}, None) == str(Path("rel/store").resolve())


def test_a_manifest_store_path_is_relative_to_the_manifest(tmp_path: Path) -> None:
    from runner.manifest import load_plan

    manifest = write_manifest(tmp_path / "proj", "store: ../shared/store\n")
    plan = load_plan(manifest)
    assert plan.store == str((tmp_path / "shared" / "store").resolve())
    manifest.write_text(manifest.read_text().replace("../shared/store", "s3://b/p"))
    assert load_plan(manifest).store == "s3://b/p"


def test_credentials_never_ride_in_a_store_url(tmp_path: Path) -> None:
    secret_url = "s3://AKIAEXAMPLE:hunter2secret@bucket/path"
    assert shown(secret_url) == "s3://bucket/path"
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        store_location(secret_url, {}, None)
    assert "hunter2secret" not in str(caught.value)
    manifest = write_manifest(tmp_path / "m", f"store: {secret_url}\n")
    checked = cli("validate", str(manifest), env=host_env(None))
    assert checked.returncode == 2
    assert "shared.yaml:" in checked.stderr
    assert "user or password" in checked.stderr
    assert "(at $.store)" in checked.stderr
    assert "hunter2secret" not in checked.stdout + checked.stderr
    flagged = cli("plan", str(write_manifest(tmp_path / "n")), "--store", secret_url,
                  env=host_env(None))
    assert flagged.returncode == 2
    assert "carries credentials" in flagged.stderr
    assert "hunter2secret" not in flagged.stderr + flagged.stdout


def test_an_unknown_kind_of_store_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs"):
        open_store("nosuchfs://bucket/path")
