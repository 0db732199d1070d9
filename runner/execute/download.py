"""Streaming downloads of outputs: constant memory, checked, atomic.

An output is streamed through ``provider.stream(url)`` in fixed-size chunks into a temporary
file next to its final name (``<name>.seedbatch-part``), hashed (sha256) while it streams,
``fsync``-ed, and renamed over the final name only when complete. Checks: the first bytes
must be a PNG, JPEG or WebP (the file extension comes from the real type, not from the
URL); the byte count must match ``Content-Length`` and the size the provider listed. A
download cut short, or any other failed check, is retried (bounded); pixel size is read by
Pillow from the header only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiofiles
import aiofiles.os
import stamina

from runner.errors import ProviderError, TransientError
from runner.media import sniff_accepted
from runner.providers.base import Provider, RemoteOutput

PART_SUFFIX = ".seedbatch-part"
CHUNK = 64 * 1024
HEAD_BYTES = 16



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


async def download_once(provider: Provider, output: RemoteOutput,
                        final_path_for: Callable[[str], Path], *,
                        chunk: int = CHUNK) -> Downloaded:
    """One attempt. ``final_path_for(ext)`` names the file once its real type is known."""
    digest = hashlib.sha256()
    received = 0
    part: Path | None = None
    fh = None

    async def start(head: bytes) -> tuple[tuple[str, str], Path]:
        """The first bytes tell the real type: name the file, open its part, write them."""
        nonlocal part, fh
        kind = sniff_accepted(head)
        if kind is None:
            raise DownloadError(f"not a PNG, JPEG or WebP image (starts with {head[:8]!r})")
        final = final_path_for(kind[1])
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + PART_SUFFIX)
        fh = await aiofiles.open(part, "wb")
        await fh.write(head)
        return kind, final

    try:
        async with provider.stream(output.url) as response:
            declared_len = response.headers.get("content-length")
            expected = int(declared_len) if declared_len and declared_len.isdigit() else None
            head = b""
            kind: tuple[str, str] | None = None
            final: Path | None = None
            async for block in response.aiter_bytes(chunk):
                if not block:
                    continue
                received += len(block)
                digest.update(block)
                if fh is not None:
                    await fh.write(block)
                    continue
                head += block
                if len(head) >= HEAD_BYTES:
                    kind, final = await start(head)
                    head = b""
            if fh is None:  # the whole body was shorter than HEAD_BYTES
                if not head:
                    raise DownloadError("empty response body")
                kind, final = await start(head)
        if expected is not None and received != expected:
            raise DownloadError(f"cut short: {received} of {expected} bytes (Content-Length)")
        if output.size is not None and received != output.size:
            raise DownloadError(f"size mismatch: received {received} bytes, the provider "
                                f"listed {output.size}")
        assert fh is not None  # start() opened it, or raised
        await fh.flush()
        await asyncio.to_thread(os.fsync, fh.fileno())
        await fh.close()
        fh = None
        assert part is not None
        assert final is not None
        assert kind is not None
        await aiofiles.os.replace(part, final)
        part = None
        await asyncio.to_thread(_fsync_dir, final.parent)
        width, height = await asyncio.to_thread(image_size, final)
        return Downloaded(final, received, digest.hexdigest(), kind[0], width, height)
    except TransientError as exc:
        raise DownloadError(f"{exc}") from None
    except ProviderError as exc:  # the link is refused (expired, missing): retrying won't help
        raise DownloadError(f"{exc}", retryable=False) from None
    finally:
        if fh is not None:
            await fh.close()
        if part is not None:
            part.unlink(missing_ok=True)


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, DownloadError) and exc.retryable


async def download(provider: Provider, output: RemoteOutput,
                   final_path_for: Callable[[str], Path], *, attempts: int = 4,
                   chunk: int = CHUNK, backoff: float = 0.5) -> Downloaded:
    """Download one output, retrying (``attempts`` in all, jittered exponential backoff
    from ``backoff`` seconds) what may work on a retry."""
    tries = 0
    try:
        async for attempt in stamina.retry_context(on=_retryable, attempts=attempts,
                                                   timeout=None, wait_initial=backoff,
                                                   wait_max=10 * backoff, wait_jitter=backoff):
            with attempt:
                tries += 1
                return await download_once(provider, output, final_path_for, chunk=chunk)
    except DownloadError as exc:
        raise DownloadError(f"download failed after {tries} attempt"
                            f"{'s' if tries > 1 else ''}: {exc}", retryable=exc.retryable) from None
    raise AssertionError("unreachable")  # pragma: no cover
