"""Streaming downloads of outputs: bounded memory, checked, atomic, one thread hop.

An output is streamed through ``provider.stream(url)`` in fixed-size chunks and hashed
(sha256) as they arrive. Up to ``buffer`` bytes (1 MiB by default) are held in memory; an
output that fits — most do — touches the disk once, in ONE hop to a small pool of file
threads (:func:`file_pool`) that writes ``<name>.seedbatch-part`` next to its final name
(making the folder only when it is not there yet), ``fsync``-s it, renames it over the
final name and ``fsync``-s the folder (a PNG's or JPEG's pixel size was read from its first
bytes meanwhile; other types' from the file, in the same hop). A larger output spills each
full buffer to the part file in one hop, then lands the same way: memory never grows with
the output. Checks: the first bytes must be a PNG, JPEG or WebP (the file extension comes
from the real type, not from the URL); the byte count must match ``Content-Length`` and the
size the provider listed — all checked before the file lands, so a failed check leaves at
most a part file, which is deleted. A download cut short, or any other failed check, is
retried (bounded); pixel size is read by Pillow from the header only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from runner.errors import ProviderError, TransientError
from runner.execute.retrying import call_retrying
from runner.media import png_size, sniff_accepted
from runner.providers.base import Provider, RemoteOutput

PART_SUFFIX = ".seedbatch-part"
CHUNK = 64 * 1024
HEAD_BYTES = 16
#: Bytes of an output held in memory: an output up to this size is written in one go (one
#: hop to a file thread); a larger one is spilled to its part file a buffer at a time. Larger
#: buffers measured no faster, and slower for outputs of several MiB (the held bytes have
#: left the CPU's caches by the time they are written).
BUFFER = 1024 * 1024
#: Bytes of an output held in memory that are given to Pillow for its pixel size.
SIZE_HEAD = 64 * 1024
_SIZED_IN_MEMORY = frozenset({"image/png", "image/jpeg"})
#: Threads doing the downloads' file work (a few: the work is short, mostly waits on fsync).
FILE_THREADS = 4

T = TypeVar("T")


class DownloadError(Exception):
    """An output could not be fetched intact; ``retryable`` when another try may work."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def image_size(path: Path | IO[bytes]) -> tuple[int | None, int | None]:
    """Pixel size from the header alone (Pillow opens lazily and decodes nothing)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:  # a header Pillow cannot read: keep the bytes, size unknown
        return None, None


def _size_in_memory(kind: str, blocks: list[bytes]) -> tuple[int | None, int | None] | None:
    """The pixel size of a PNG or JPEG held in memory, read from its first bytes in the
    calling thread (a few microseconds; the file thread then runs no Python for it); None
    when those bytes do not tell it (it is then read from the file)."""
    if kind not in _SIZED_IN_MEMORY:
        return None  # WebP: Pillow makes a decoder (and its canvas) to read the size
    size = png_size(blocks[0]) if blocks else None
    if size is not None:
        return size  # a PNG says it in its first chunk: no Pillow needed
    n = held = 0
    while n < len(blocks) and held < SIZE_HEAD:
        held += len(blocks[n])
        n += 1
    head = blocks[0] if n == 1 else b"".join(blocks[:n])
    width, height = image_size(io.BytesIO(head))
    return None if width is None else (width, height)


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

    __slots__ = ("fd", "final", "landed", "part")

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(final.name + PART_SUFFIX)
        self.fd: int | None = None
        self.landed = False

    def write(self, blocks: list[bytes]) -> None:
        try:
            if self.fd is None:
                try:
                    self.fd = os.open(self.part, _CREATE, 0o666)
                except FileNotFoundError:  # no folder yet (its first output): make it
                    self.final.parent.mkdir(parents=True, exist_ok=True)
                    self.fd = os.open(self.part, _CREATE, 0o666)
            _write_all(self.fd, blocks)
            # emptied here: the pool's work item may hold the list a while after this returns
            blocks.clear()
        except BaseException:
            self.discard()
            raise

    def land(self, blocks: list[bytes],
             size: tuple[int | None, int | None] | None = None) -> tuple[int | None, int | None]:
        """Write the rest, fsync, rename over the final name, fsync the folder; then the
        pixel size (``size``, or read from the file when not given). The file and its name
        are durable when this returns."""
        self.write(blocks)
        fd = self.fd
        assert fd is not None
        try:
            os.fsync(fd)
            self.fd = None
            os.close(fd)
            os.replace(self.part, self.final)
        except BaseException:
            self.discard()
            raise
        self.landed = True
        _fsync_dir(self.final.parent)
        return size if size is not None else image_size(self.final)

    def discard(self) -> None:
        """Close and delete the part file (what a failed or abandoned download leaves)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.landed:
            self.part.unlink(missing_ok=True)


_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
           | getattr(os, "O_BINARY", 0))
_IOV_MAX = 1024  # blocks per writev (POSIX guarantees at least 16; Linux takes 1024)


def _write_all(fd: int, blocks: list[bytes]) -> None:
    """Write every block, in order, with as few system calls as may be."""
    if not hasattr(os, "writev"):  # pragma: no cover (Windows)
        for block in blocks:
            _write_rest(fd, memoryview(block))
        return
    for start in range(0, len(blocks), _IOV_MAX):
        group = blocks[start:start + _IOV_MAX]
        done = os.writev(fd, group)
        total = sum(map(len, group))
        if done < total:  # a short write (a signal, a full disk): the rest, piece by piece
            _write_rest(fd, memoryview(b"".join(group))[done:])


def _write_rest(fd: int, rest: memoryview) -> None:
    while rest:
        rest = rest[os.write(fd, rest):]


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
    spilled = False  # some bytes are in the part file already
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
                    spilled = True
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
        size = None if spilled else _size_in_memory(kind[0], held)
        blocks, held = held, []
        width, height = await in_thread(sink.land, blocks, size)
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

    async def once() -> Downloaded:
        nonlocal tries
        tries += 1
        return await download_once(provider, output, final_path_for, chunk=chunk,
                                   buffer=buffer, pool=pool)

    try:
        return await call_retrying(once, on=_retryable, attempts=attempts,
                                   wait_initial=backoff, wait_max=10 * backoff,
                                   wait_jitter=backoff)
    except DownloadError as exc:
        raise DownloadError(f"download failed after {tries} attempt"
                            f"{'s' if tries > 1 else ''}: {exc}", retryable=exc.retryable) from None
