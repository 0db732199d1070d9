"""Streaming downloads of outputs: bounded memory, checked, atomic, one thread hop.

An output is streamed through ``provider.stream(url)`` in fixed-size chunks and hashed
(sha256) as they arrive. Up to ``buffer`` bytes (4 MiB by default) are held in memory; an
output that fits — most do — touches the disk once, in ONE hop to a small pool of file
threads (:func:`file_pool`) that makes its folder, writes ``<name>.seedbatch-part`` next to
its final name, ``fsync``-s it, renames it over the final name, ``fsync``-s the folder and
reads the pixel size. A larger
output spills each full buffer to the part file in one hop, then lands the same way: memory
never grows with the output. Checks: the first bytes must be a PNG, JPEG or WebP (the file
extension comes from the real type, not from the URL); the byte count must match
``Content-Length`` and the size the provider listed — all checked before the file lands, so
a failed check leaves at most a part file, which is deleted. A download cut short, or any
other failed check, is retried (bounded); pixel size is read by Pillow from the header only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import stamina

from runner.errors import ProviderError, TransientError
from runner.media import sniff_accepted
from runner.providers.base import Provider, RemoteOutput

PART_SUFFIX = ".seedbatch-part"
CHUNK = 64 * 1024
HEAD_BYTES = 16
#: Bytes of an output held in memory: an output up to this size is written in one go (one
#: hop to a file thread); a larger one is spilled to its part file a buffer at a time.
BUFFER = 4 * 1024 * 1024
#: Threads doing the downloads' file work (a few: the work is short, mostly waits on fsync).
FILE_THREADS = 4

T = TypeVar("T")


class DownloadError(Exception):
    """An output could not be fetched intact; ``retryable`` when another try may work."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def image_size(path: Path) -> tuple[int | None, int | None]:
    """Pixel size from the header alone (Pillow opens lazily and decodes nothing)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # a header Pillow cannot read: keep the bytes, size unknown
        return None, None


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path  # final, absolute
    bytes: int
    sha256: str
    content_type: str
    width: int | None
    height: int | None


def discard_partials(root: Path) -> int:
    """Delete every temporary download under ``root``; returns how many."""
    n = 0
    if root.is_dir():
        for part in root.rglob(f"*{PART_SUFFIX}"):
            part.unlink(missing_ok=True)
            n += 1
    return n


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def file_pool() -> ThreadPoolExecutor:
    """The process's pool of file threads for downloads (made on first use; threads are
    started as work comes, at most :data:`FILE_THREADS`). Fewer threads than the loop's
    default executor: fewer stacks and malloc arenas with thousands of jobs in flight."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=FILE_THREADS,
                                       thread_name_prefix="seedbatch-files")
        return _pool


def _forget_pool() -> None:  # a forked child has none of its parent's threads
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _PartFile:
    """One download's file work, done in a file thread: the part file (made when the first
    bytes are written) and its landing under the final name. Only one of its methods runs
    at a time (the download awaits each before the next)."""

    __slots__ = ("fh", "final", "landed", "part")

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(final.name + PART_SUFFIX)
        self.fh: IO[bytes] | None = None
        self.landed = False

    def write(self, blocks: list[bytes]) -> None:
        try:
            if self.fh is None:
                self.final.parent.mkdir(parents=True, exist_ok=True)
                self.fh = open(self.part, "wb")  # noqa: SIM115 (closed by land or discard)
            self.fh.writelines(blocks)
            # emptied here: the pool's work item may hold the list a while after this returns
            blocks.clear()
        except BaseException:
            self.discard()
            raise

    def land(self, blocks: list[bytes]) -> tuple[int | None, int | None]:
        """Write the rest, fsync, rename over the final name, fsync the folder; then the
        pixel size. The file and its name are durable when this returns."""
        self.write(blocks)
        fh = self.fh
        assert fh is not None
        try:
            fh.flush()
            os.fsync(fh.fileno())
            self.fh = None
            fh.close()
            os.replace(self.part, self.final)
        except BaseException:
            self.discard()
            raise
        self.landed = True
        _fsync_dir(self.final.parent)
        return image_size(self.final)

    def discard(self) -> None:
        """Close and delete the part file (what a failed or abandoned download leaves)."""
        fh, self.fh = self.fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        if not self.landed:
            self.part.unlink(missing_ok=True)


async def download_once(provider: Provider, output: RemoteOutput,
                        final_path_for: Callable[[str], Path], *,
                        chunk: int = CHUNK, buffer: int = BUFFER,
                        pool: Executor | None = None) -> Downloaded:
    """One attempt. ``final_path_for(ext)`` names the file once its real type is known.
    At most ``buffer`` bytes are held in memory (and one chunk more); ``pool`` does the file
    work (default: :func:`file_pool`): one task for an output up to ``buffer`` bytes, one
    more per ``buffer`` bytes beyond."""
    files = pool if pool is not None else file_pool()
    digest = hashlib.sha256()
    received = 0
    held: list[bytes] = []  # received, not written yet
    held_bytes = 0
    sink: _PartFile | None = None
    busy: Future[Any] | None = None  # the file work in progress, if any

    async def in_thread(fn: Callable[..., T], *args: Any) -> T:
        nonlocal busy
        busy = files.submit(fn, *args)
        result: T = await asyncio.wrap_future(busy)
        busy = None
        return result

    try:
        async with provider.stream(output.url) as response:
            declared_len = response.headers.get("content-length")
            expected = int(declared_len) if declared_len and declared_len.isdigit() else None
            kind: tuple[str, str] | None = None
            async for block in response.aiter_bytes(chunk):
                if not block:
                    continue
                received += len(block)
                digest.update(block)
                held.append(block)
                held_bytes += len(block)
                if kind is None:
                    if held_bytes < HEAD_BYTES:
                        continue
                    kind, sink = _start(b"".join(held), final_path_for)
                if held_bytes >= buffer:
                    assert sink is not None
                    spill, held, held_bytes = held, [], 0
                    await in_thread(sink.write, spill)
                    del spill  # written: not held through the next buffer
            if kind is None:  # the whole body was shorter than HEAD_BYTES
                if not held:
                    raise DownloadError("empty response body")
                kind, sink = _start(b"".join(held), final_path_for)
        if expected is not None and received != expected:
            raise DownloadError(f"cut short: {received} of {expected} bytes (Content-Length)")
        if output.size is not None and received != output.size:
            raise DownloadError(f"size mismatch: received {received} bytes, the provider "
                                f"listed {output.size}")
        assert sink is not None
        blocks, held = held, []
        width, height = await in_thread(sink.land, blocks)
        return Downloaded(sink.final, received, digest.hexdigest(), kind[0], width, height)
    except TransientError as exc:
        raise DownloadError(f"{exc}") from None
    except ProviderError as exc:  # the link is refused (expired, missing): retrying won't help
        raise DownloadError(f"{exc}", retryable=False) from None
    finally:
        if sink is not None and not sink.landed:
            await _abandon(sink, busy)


async def _abandon(sink: _PartFile, busy: Future[Any] | None) -> None:
    """Delete what a failed or cancelled attempt left. A cancelled wait does not stop the
    file thread working for it: that work (milliseconds) is waited for first, so that no
    later attempt at the same file overlaps it."""
    if busy is not None and not busy.done():
        try:
            await asyncio.shield(asyncio.wrap_future(busy))
        except asyncio.CancelledError:  # cancelled again: delete once the thread is done
            busy.add_done_callback(functools.partial(_discard_after, sink))
            raise
        except Exception:
            pass  # the thread cleaned up; the attempt's own error is the one that counts
    sink.discard()


def _discard_after(sink: _PartFile, _done: Future[Any]) -> None:
    sink.discard()


def _start(head: bytes, final_path_for: Callable[[str], Path]
           ) -> tuple[tuple[str, str], _PartFile]:
    """The first bytes tell the real type: name the file (nothing is written yet)."""
    kind = sniff_accepted(head)
    if kind is None:
        raise DownloadError(f"not a PNG, JPEG or WebP image (starts with {head[:8]!r})")
    return kind, _PartFile(final_path_for(kind[1]))


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, DownloadError) and exc.retryable


async def download(provider: Provider, output: RemoteOutput,
                   final_path_for: Callable[[str], Path], *, attempts: int = 4,
                   chunk: int = CHUNK, backoff: float = 0.5, buffer: int = BUFFER,
                   pool: Executor | None = None) -> Downloaded:
    """Download one output, retrying (``attempts`` in all, jittered exponential backoff
    from ``backoff`` seconds) what may work on a retry. ``buffer`` and ``pool``: see
    :func:`download_once`."""
    tries = 0
    try:
        async for attempt in stamina.retry_context(on=_retryable, attempts=attempts,
                                                   timeout=None, wait_initial=backoff,
                                                   wait_max=10 * backoff, wait_jitter=backoff):
            with attempt:
                tries += 1
                return await download_once(provider, output, final_path_for, chunk=chunk,
                                           buffer=buffer, pool=pool)
    except DownloadError as exc:
        raise DownloadError(f"download failed after {tries} attempt"
                            f"{'s' if tries > 1 else ''}: {exc}", retryable=exc.retryable) from None
    raise AssertionError("unreachable")  # pragma: no cover
