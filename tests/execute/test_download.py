from __future__ import annotations

import asyncio
import hashlib
import threading
import tracemalloc
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from execute_fakes import FakeProvider, image_bytes

from runner.errors import JobRejected, ServerError
from runner.execute import download as download_module
from runner.execute.download import (
    BUFFER,
    PART_SUFFIX,
    DownloadError,
    discard_partials,
    download,
)
from runner.media import sniff_accepted
from runner.providers.base import RemoteOutput

pytestmark = pytest.mark.anyio


def _provider(url: str, data: bytes, **kw: object) -> FakeProvider:
    p = FakeProvider(**kw)  # type: ignore[arg-type]
    p.files[url] = data
    return p


def _namer(tmp_path: Path) -> tuple[list[str], object]:
    asked: list[str] = []

    def final_for(ext: str) -> Path:
        asked.append(ext)
        return tmp_path / "outputs" / "job" / f"0.{ext}"

    return asked, final_for


def _leftovers(tmp_path: Path) -> list[Path]:
    return list(tmp_path.rglob(f"*{PART_SUFFIX}"))


async def test_a_download_is_hashed_typed_sized_and_named_by_its_real_type(
        tmp_path: Path) -> None:
    data = image_bytes("JPEG", (40, 30))
    url = "https://cdn.example/out.png"  # the URL says PNG; the bytes are a JPEG
    provider = _provider(url, data, chunk=100)
    asked, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput(url, size=len(data)), final_for)
    assert asked == ["jpg"]
    assert got.path == tmp_path / "outputs" / "job" / "0.jpg"
    assert got.path.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert (got.bytes, got.content_type, got.width, got.height) == (len(data), "image/jpeg",
                                                                     40, 30)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("fmt", "ctype"), [("PNG", "image/png"), ("WEBP", "image/webp")])
async def test_png_and_webp_are_recognised(tmp_path: Path, fmt: str, ctype: str) -> None:
    data = image_bytes(fmt, (5, 7))
    provider = _provider("https://x/a", data)
    _, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput("https://x/a"), final_for)
    assert got.content_type == ctype
    assert (got.width, got.height) == (5, 7)


async def test_a_download_cut_short_is_retried_and_lands_whole(tmp_path: Path) -> None:
    data = image_bytes("PNG", (64, 64))
    url = "https://x/cut"
    provider = _provider(url, data, chunk=64)
    provider.download_cuts[url] = 2
    _, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput(url), final_for, attempts=3, backoff=0.01)
    assert got.path.read_bytes() == data
    assert provider.requests_sent["download"] == 3
    assert _leftovers(tmp_path) == []


async def test_retries_are_bounded_and_leave_nothing_behind(tmp_path: Path) -> None:
    data = image_bytes("PNG", (64, 64))
    url = "https://x/cut"
    provider = _provider(url, data, chunk=64)
    provider.download_cuts[url] = 10
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="after 3 attempts"):
        await download(provider, RemoteOutput(url), final_for, attempts=3, backoff=0.01)
    assert provider.requests_sent["download"] == 3
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "outputs" / "job" / "0.png").exists()


async def test_content_length_mismatch_is_caught(tmp_path: Path) -> None:
    data = image_bytes("PNG")
    provider = _provider("https://x/a", data)
    provider.wrong_length.add("https://x/a")
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="Content-Length"):
        await download(provider, RemoteOutput("https://x/a"), final_for, attempts=2,
                       backoff=0.01)
    assert _leftovers(tmp_path) == []


async def test_size_listed_by_the_provider_is_checked(tmp_path: Path) -> None:
    data = image_bytes("PNG")
    provider = _provider("https://x/a", data)
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="size mismatch"):
        await download(provider, RemoteOutput("https://x/a", size=len(data) + 1), final_for,
                       attempts=1)


async def test_wrong_magic_bytes_are_refused(tmp_path: Path) -> None:
    provider = _provider("https://x/a", b"<html><body>Access denied</body></html>")
    asked, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="not a PNG, JPEG or WebP"):
        await download(provider, RemoteOutput("https://x/a"), final_for, attempts=1)
    assert asked == []
    assert not (tmp_path / "outputs").exists()


async def test_a_refused_link_is_not_retried(tmp_path: Path) -> None:
    provider = _provider("https://x/a", image_bytes())
    provider.script("download", JobRejected("HTTP 403 (link expired?)"))
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError) as info:
        await download(provider, RemoteOutput("https://x/a"), final_for, attempts=4,
                       backoff=0.01)
    assert not info.value.retryable
    assert provider.requests_sent["download"] == 1


async def test_a_server_error_is_retried(tmp_path: Path) -> None:
    provider = _provider("https://x/a", image_bytes())
    provider.script("download", ServerError("HTTP 502"), ServerError("HTTP 503"))
    _, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput("https://x/a"), final_for, attempts=3,
                         backoff=0.01)
    assert got.bytes > 0
    assert provider.requests_sent["download"] == 3


@pytest.mark.parametrize("buffer", [BUFFER, 256 * 1024])
async def test_memory_stays_flat_for_a_large_output(tmp_path: Path, buffer: int) -> None:
    header = image_bytes("PNG", (4, 4))
    big = header + b"\0" * (24 * 1024 * 1024)  # 24 MB: a PNG header, then padding
    provider = _provider("https://x/big", big, chunk=64 * 1024)
    _, final_for = _namer(tmp_path)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    got = await download(provider, RemoteOutput("https://x/big", size=len(big)), final_for,
                         buffer=buffer)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert got.bytes == len(big)
    assert got.sha256 == hashlib.sha256(big).hexdigest()
    assert got.path.read_bytes() == big
    assert peak < buffer + 2 * 1024 * 1024  # the buffer and a few chunks, never the file


def test_sniff_and_discard_partials(tmp_path: Path) -> None:
    assert sniff_accepted(image_bytes("PNG")) == ("image/png", "png")
    assert sniff_accepted(b"GIF89a....") is None
    assert sniff_accepted(b"RIFF\0\0\0\0WAVE") is None
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / f"0.png{PART_SUFFIX}").write_bytes(b"x")
    (tmp_path / "a" / "1.png").write_bytes(b"x")
    assert discard_partials(tmp_path) == 1
    assert (tmp_path / "a" / "1.png").exists()
    assert _leftovers(tmp_path) == []


# -- file work: one hop to the file threads for an output that fits the buffer ---------------


class CountingPool(ThreadPoolExecutor):
    """A file pool that records the name of every function handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append(fn.__name__)
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> Any:
    p = CountingPool()
    yield p
    p.shutdown(wait=True)


async def test_a_small_download_costs_one_hop_to_a_file_thread(tmp_path: Path,
                                                                pool: CountingPool) -> None:
    data = image_bytes("PNG", (64, 64))
    provider = _provider("https://x/a", data, chunk=100)  # many chunks, one hop
    _, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput("https://x/a", size=len(data)), final_for,
                         pool=pool)
    assert pool.calls == ["land"]
    assert got.path.read_bytes() == data
    assert (got.width, got.height) == (64, 64)
    assert _leftovers(tmp_path) == []


async def test_the_default_file_pool_is_used_not_the_loops_executor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: CountingPool) -> None:
    monkeypatch.setattr(download_module, "_pool", pool)
    default = CountingPool()
    asyncio.get_running_loop().set_default_executor(default)
    data = image_bytes("PNG", (16, 16))
    _, final_for = _namer(tmp_path)
    await download(_provider("https://x/a", data), RemoteOutput("https://x/a"), final_for)
    assert download_module.file_pool() is pool
    assert pool.calls == ["land"]
    assert default.calls == []


async def test_a_large_output_is_spilled_a_buffer_at_a_time_and_verified(
        tmp_path: Path, pool: CountingPool) -> None:
    big = image_bytes("PNG", (4, 4)) + bytes(range(256)) * 4000  # ~1 MB, not a round size
    provider = _provider("https://x/big", big, chunk=64 * 1024)
    _, final_for = _namer(tmp_path)
    got = await download(provider, RemoteOutput("https://x/big", size=len(big)), final_for,
                         buffer=256 * 1024, pool=pool)
    assert got.sha256 == hashlib.sha256(big).hexdigest()
    assert got.path.read_bytes() == big
    # a write per full buffer (256 KiB: four 64 KiB chunks), then the landing
    assert pool.calls == ["write"] * (len(big) // (256 * 1024)) + ["land"]
    assert _leftovers(tmp_path) == []


async def test_a_failure_mid_body_after_a_spill_leaves_no_part_file(
        tmp_path: Path, pool: CountingPool) -> None:
    big = image_bytes("PNG", (4, 4)) + b"\1" * (1024 * 1024)
    url = "https://x/big"
    provider = _provider(url, big, chunk=64 * 1024)
    provider.download_cuts[url] = 1  # cut at half the body: two buffers were written
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="connection closed mid-body"):
        await download(provider, RemoteOutput(url), final_for, attempts=1,
                       buffer=256 * 1024, pool=pool)
    assert pool.calls == ["write", "write"]  # the part file existed
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "outputs" / "job" / "0.png").exists()


async def test_a_failed_check_after_a_spill_leaves_no_part_file(
        tmp_path: Path, pool: CountingPool) -> None:
    big = image_bytes("PNG", (4, 4)) + b"\1" * (600 * 1024)
    provider = _provider("https://x/big", big, chunk=64 * 1024)
    _, final_for = _namer(tmp_path)
    with pytest.raises(DownloadError, match="size mismatch"):
        await download(provider, RemoteOutput("https://x/big", size=len(big) - 1), final_for,
                       attempts=1, buffer=256 * 1024, pool=pool)
    assert pool.calls == ["write", "write"]
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "outputs" / "job" / "0.png").exists()


async def test_a_download_cancelled_while_a_thread_writes_waits_for_it_then_cleans_up(
        tmp_path: Path) -> None:
    """Cancelling the wait does not stop the thread: the download ends after it (so no
    later attempt at the same file overlaps it), and deletes the part file."""
    entered, release = threading.Event(), threading.Event()

    class GatedPool(CountingPool):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            def gated(*a: Any) -> Any:
                entered.set()
                release.wait(30)
                return fn(*a)
            self.calls.append(fn.__name__)
            return ThreadPoolExecutor.submit(self, gated, *args)

    gated = GatedPool()
    big = image_bytes("PNG", (4, 4)) + b"\1" * (600 * 1024)
    provider = _provider("https://x/big", big, chunk=64 * 1024)
    _, final_for = _namer(tmp_path)
    task = asyncio.ensure_future(download(provider, RemoteOutput("https://x/big"), final_for,
                                          attempts=1, buffer=256 * 1024, pool=gated))
    assert await asyncio.to_thread(entered.wait, 30)  # the write is in its thread
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gated.calls == ["write"]
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "outputs" / "job" / "0.png").exists()
    gated.shutdown(wait=True)


async def test_the_folder_is_fsynced_after_the_rename_in_the_same_hop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: CountingPool) -> None:
    done: list[tuple[str, Path]] = []
    real_fsync_dir, real_replace = download_module._fsync_dir, download_module.os.replace

    def fsync_dir(path: Path) -> None:
        done.append(("fsync", path))
        real_fsync_dir(path)

    def replace(src: Path, dst: Path) -> None:
        done.append(("rename", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(download_module, "_fsync_dir", fsync_dir)
    monkeypatch.setattr(download_module.os, "replace", replace)
    data = image_bytes("PNG")
    _, final_for = _namer(tmp_path)
    got = await download(_provider("https://x/a", data), RemoteOutput("https://x/a"),
                         final_for, pool=pool)
    assert done == [("rename", got.path), ("fsync", got.path.parent)]
    assert pool.calls == ["land"]


def _jpeg_with_a_large_profile() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()  # 100 KB of ICC profile before the frame header: past the first 64 KiB
    Image.new("RGB", (40, 30), "red").save(buf, "JPEG", icc_profile=b"\0" * 100_000)
    return buf.getvalue()


@pytest.mark.parametrize(("data", "read_from"), [
    (image_bytes("PNG", (64, 48)), []),  # its first chunk (IHDR) says it: no Pillow at all
    (image_bytes("JPEG", (64, 48)), ["memory"]),
    (image_bytes("WEBP", (64, 48)), ["file"]),  # Pillow would make a decoder: in the thread
    (_jpeg_with_a_large_profile(), ["memory", "file"]),  # the head does not tell: the file
], ids=["png", "jpeg", "webp", "jpeg-late-header"])
async def test_the_pixel_size_is_read_from_memory_when_the_head_tells_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: CountingPool, data: bytes,
        read_from: list[str]) -> None:
    reads: list[str] = []
    real = download_module.image_size

    def image_size(source: Any) -> tuple[int | None, int | None]:
        reads.append("file" if isinstance(source, Path) else "memory")
        return real(source)

    monkeypatch.setattr(download_module, "image_size", image_size)
    _, final_for = _namer(tmp_path)
    got = await download(_provider("https://x/a", data, chunk=4096),
                         RemoteOutput("https://x/a"), final_for, pool=pool)
    assert reads == read_from
    assert (got.width, got.height) == ((40, 30) if len(data) > 100_000 else (64, 48))
    assert pool.calls == ["land"]


async def test_many_small_blocks_and_short_writes_land_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: CountingPool) -> None:
    import os

    data = image_bytes("PNG", (4, 4)) + bytes(range(256)) * 1200  # ~300 KB
    real_writev = os.writev
    short = []

    def writev(fd: int, blocks: list[bytes]) -> int:
        if not short:  # the first call writes 10 bytes only, as a signal might make it
            short.append(len(blocks))
            return os.write(fd, b"".join(blocks)[:10])
        return real_writev(fd, blocks)

    monkeypatch.setattr(download_module.os, "writev", writev)
    _, final_for = _namer(tmp_path)
    got = await download(_provider("https://x/a", data, chunk=100),
                         RemoteOutput("https://x/a", size=len(data)), final_for, pool=pool,
                         chunk=100)  # ~3,000 blocks of 100 bytes
    assert short == [1024]  # more blocks than one writev takes
    assert got.path.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert pool.calls == ["land"]


async def test_a_folder_is_made_by_its_first_output_and_again_if_it_was_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Path] = []
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    data = image_bytes("PNG", (6, 4))
    provider = _provider("https://x/o", data)
    folder = tmp_path / "outputs" / "deep" / "er"

    async def one(name: str) -> None:
        got = await download(provider, RemoteOutput("https://x/o"),
                             lambda ext: folder / f"{name}.{ext}")
        assert got.path.read_bytes() == data

    await one("a")
    assert folder in made  # made (with its parents) for the first output
    first = len(made)
    await one("b")
    assert len(made) == first  # the second finds it there: no mkdir
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    await one("c")  # removed in between: made again
    assert folder in made[first:]
    assert sorted(p.name for p in folder.iterdir()) == ["c.png"]
    assert _leftovers(tmp_path) == []
