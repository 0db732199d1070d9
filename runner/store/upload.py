"""Uploading outputs to a store in the background, and what came of it.

A run hands each delivered job to an :class:`Uploader` (``submit``) and goes on: the
upload runs in a small thread pool (``workers`` jobs at once), each store call retried with
exponential backoff and jitter (stamina). When one job's upload still fails after its
retries, the store is taken to be down for the rest of this process: later jobs are not
tried (each would wait out its own retries), so a dead store never slows a run by more
than one job's retries. ``close`` waits for what was started and says what was stored;
whatever was not, ``seedbatch push RUN_DIR`` stores later (every step is idempotent: an
object or record already there is left alone).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import stamina

from runner.errors import StoreError
from runner.store.store import Store, StoreRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One job's outputs (the files, in the record's order) and its record."""

    record: StoreRecord
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    workers: int = 4  # jobs uploaded at once
    attempts: int = 4  # per store call
    wait_initial: float = 0.2  # seconds; doubles each retry, with as much jitter
    wait_max: float = 2.0
    timeout: float = 30.0  # at most this long retrying one call


@dataclass
class UploadSummary:
    """What an upload pass did. ``failed`` maps job key → why it is not in the store."""

    url: str
    stored_keys: set[str] = field(default_factory=set)  # records in the store now
    objects_written: int = 0
    bytes_written: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # key → job name, for messages
    error: str | None = None  # the failure that took the store down, if one did
    report_problem: str | None = None  # push: the report could not be rewritten

    @property
    def stored(self) -> int:
        """Jobs whose record is in the store (written now or already there)."""
        return len(self.stored_keys)

    @property
    def complete(self) -> bool:
        return not self.failed


class Uploader:
    def __init__(self, store: Store, policy: UploadPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or UploadPolicy()
        self.summary = UploadSummary(store.url)
        self._pool = ThreadPoolExecutor(max_workers=self.policy.workers,
                                        thread_name_prefix="seedbatch-store")
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._down: str | None = None

    def submit(self, item: UploadItem) -> None:
        """Queue one job's upload; returns at once."""
        with self._lock:
            self.summary.names[item.record.key] = item.record.name
        self._futures.append(self._pool.submit(self._upload, item))

    def run(self, items: Sequence[UploadItem]) -> UploadSummary:
        """Upload ``items`` and wait (``seedbatch push``)."""
        for item in items:
            self.submit(item)
        return self.close()

    def close(self) -> UploadSummary:
        """Wait for every queued upload; what was stored and what was not."""
        for future in self._futures:
            future.result()
        self._pool.shutdown(wait=True)
        return self.summary

    def _call(self, what: Callable[[], T]) -> T:
        p = self.policy
        for attempt in stamina.retry_context(
                on=_retryable, attempts=p.attempts, timeout=p.timeout,
                wait_initial=p.wait_initial, wait_max=p.wait_max,
                wait_jitter=p.wait_initial):
            with attempt:
                return what()
        raise AssertionError("unreachable")  # pragma: no cover

    def _upload(self, item: UploadItem) -> None:
        key = item.record.key
        if self._down is not None:
            self._failed(key, f"not tried: the store failed earlier ({self._down})")
            return
        try:
            written, nbytes = 0, 0
            for out, path in zip(item.record.outputs, item.files, strict=True):
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != out.sha256:
                    self._failed(key, f"{path.name} changed since it was downloaded (its "
                                      f"sha256 differs): not stored")
                    return
                if self._call(functools.partial(self.store.put_object, data, out.sha256)):
                    written += 1
                    nbytes += len(data)
            self._call(lambda: self.store.put_record(item.record))
        except OSError as exc:  # the local file: gone or unreadable
            self._failed(key, f"output not readable: {exc}")
            return
        except StoreError as exc:
            with self._lock:
                if self._down is None:
                    self._down = str(exc)
                    self.summary.error = str(exc)
            self._failed(key, str(exc))
            return
        with self._lock:
            self.summary.stored_keys.add(key)
            self.summary.objects_written += written
            self.summary.bytes_written += nbytes

    def _failed(self, key: str, why: str) -> None:
        with self._lock:
            self.summary.failed[key] = why


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, StoreError)
