"""Shared plumbing: downloads, Retry-After, image sniffing, the registry and the HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from runner import __version__
from runner.config import ProviderSettings
from runner.errors import ConfigError, ConnectFailed, JobRejected, RateLimited, ServerError
from runner.media import sniff_image
from runner.plugins import registry
from runner.providers import Provider, make_provider
from runner.providers.http import (
    DEFAULT_TIMEOUT,
    TRANSFER_TIMEOUT,
    USER_AGENT,
    HttpProvider,
    excerpt,
    parse_retry_after,
)
from runner.providers.pixwith import PixwithProvider
from runner.providers.wiro import WiroProvider

from .conftest import (
    PIXWITH_KEY,
    WIRO_KEY,
    WIRO_SECRET,
    jpeg_bytes,
    pixwith_client,
    png_bytes,
    wiro_client,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), (" 3 ", 3.0), ("1.5", 1.5), ("-4", 0.0), ("", None), (None, None),
    ("soon", None), ("nan", None),
    ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
    ("Wednesday, 01-Jan-25 12:01:00 GMT", 60.0),
    ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),  # in the past: go now
])
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_sniff_image() -> None:
    assert sniff_image(png_bytes()[:32]) == ("image/png", "png")
    assert sniff_image(jpeg_bytes()[:32]) == ("image/jpeg", "jpg")
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image/webp", "webp")
    assert sniff_image(b"GIF89a....") == ("image/gif", "gif")
    assert sniff_image(b"hello world") is None


def test_excerpt_masks_secrets_and_stays_short() -> None:
    text = excerpt("line one\n\n  secret-xyz  " + "z" * 500, ("secret-xyz",))
    assert "secret-xyz" not in text
    assert text.startswith("line one *** zzz")
    assert len(text) == 200


# -- downloads --------------------------------------------------------------------------------

PNG = png_bytes(16, 9)


def cdn(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/out/0.png":
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    if path == "/moved.png":
        return httpx.Response(302, headers={"location": "https://cdn.test/out/0.png"})
    codes = {"/gone.png": 404, "/expired.png": 403, "/busy.png": 503, "/slow-down.png": 429}
    return httpx.Response(codes[path], text="nope", headers={"retry-after": "2"})


@pytest.mark.anyio
@pytest.mark.parametrize("make", [wiro_client, pixwith_client])
async def test_stream_sends_no_credentials_and_follows_redirects(make: Any) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return cdn(request)

    async with make(handler) as client:
        async with client.stream("https://cdn.test/moved.png") as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert client.requests_sent["download"] == 1
    assert body == PNG
    assert [r.url.path for r in seen] == ["/moved.png", "/out/0.png"]
    for request in seen:
        lowered = {k.lower() for k in request.headers}
        assert not lowered & {"x-api-key", "x-signature", "x-nonce", "api-key", "authorization"}
        assert WIRO_KEY not in str(request.headers)
        assert PIXWITH_KEY not in str(request.headers)
        assert request.headers["user-agent"] == f"seedbatch/{__version__}"


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "error"), [
    ("/gone.png", JobRejected), ("/expired.png", JobRejected), ("/busy.png", ServerError),
    ("/slow-down.png", RateLimited),
])
async def test_stream_http_errors_are_typed(path: str, error: type[Exception]) -> None:
    async with wiro_client(cdn) as client:
        with pytest.raises(error) as info:
            async with client.stream(f"https://cdn.test{path}"):
                pytest.fail("an error answer must not be yielded")
    assert type(info.value) is error


@pytest.mark.anyio
async def test_stream_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with wiro_client(refuse) as client:
        with pytest.raises(ConnectFailed):
            async with client.stream("https://cdn.test/out/0.png"):
                pass

    class Truncated(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[override]
            yield PNG[:10]
            raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                            "message body")

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Truncated(), headers={"content-length": str(len(PNG))})

    async def read_all(client: WiroProvider) -> bytes:
        async with client.stream("https://cdn.test/out/0.png") as response:
            return b"".join([chunk async for chunk in response.aiter_bytes()])

    async with wiro_client(short) as client:
        with pytest.raises(ServerError, match="answer was lost"):
            await read_all(client)


@pytest.mark.anyio
async def test_stream_refuses_non_http_urls() -> None:
    async with wiro_client(cdn) as client:
        with pytest.raises(JobRejected):
            async with client.stream("file:///etc/passwd"):
                pass
        assert client.requests_sent["download"] == 0


# -- registry and client settings -------------------------------------------------------------

@pytest.mark.anyio
async def test_registry_and_make_provider() -> None:
    assert {"pixwith", "wiro"} <= set(registry().providers)
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    wiro = make_provider(ProviderSettings("wiro", "https://w.test/v1", WIRO_KEY, WIRO_SECRET),
                         transport=transport)
    pix = make_provider(ProviderSettings("pixwith", "https://p.test/api/", PIXWITH_KEY),
                        timeout=httpx.Timeout(5.0))
    try:
        assert isinstance(wiro, WiroProvider)
        assert isinstance(pix, PixwithProvider)
        assert isinstance(wiro, Provider)
        assert isinstance(pix, Provider)
        assert wiro.name == "wiro"
        assert pix.name == "pixwith"
        assert pix.base_url == "https://p.test/api"
        assert wiro.client.timeout == DEFAULT_TIMEOUT
        assert DEFAULT_TIMEOUT.connect == 10.0
        assert DEFAULT_TIMEOUT.read == 60.0
        assert TRANSFER_TIMEOUT.read is not None
        assert TRANSFER_TIMEOUT.read > DEFAULT_TIMEOUT.read
        assert pix.client.timeout == httpx.Timeout(5.0)
        assert wiro.client.headers["user-agent"] == f"seedbatch/{__version__}"
        assert dict(wiro.requests_sent) == {k: 0 for k in
                                            ("submit", "poll", "cancel", "upload", "download",
                                             "balance")}
    finally:
        await wiro.aclose()
        await pix.aclose()
    with pytest.raises(ConfigError, match="no installed provider"):
        make_provider(ProviderSettings("midjourney", "https://m.test", "k"))


@pytest.mark.anyio
async def test_a_pooled_connection_the_server_closed_is_not_reused() -> None:
    """The pool's readability check (our lighter stream) still sees a server's hang-up: the
    next request opens a new connection instead of failing on the dead one."""
    import asyncio

    from runner.providers.http import HttpProvider

    closed = asyncio.Event()
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
                     b"\r\nok")
        await writer.drain()
        writer.close()  # keep-alive announced, then hung up
        await writer.wait_closed()
        closed.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = HttpProvider(base_url=f"http://127.0.0.1:{port}", secrets=())
    try:
        first = await provider.send("poll", "GET", f"http://127.0.0.1:{port}/a")
        await closed.wait()
        await asyncio.sleep(0.05)  # the FIN is in (loopback); a hang guard, not a condition
        second = await provider.send("poll", "GET", f"http://127.0.0.1:{port}/b")
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert (first.text, second.text) == ("ok", "ok")
    assert connections == 2


@pytest.mark.anyio
async def test_a_submit_waiting_for_a_turn_goes_before_waiting_polls() -> None:
    import asyncio

    from runner.providers.http import _Turns

    turns = _Turns(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def call(name: str, first: bool) -> None:
        async with turns.turn(first=first):
            order.append(name)
            if name == "holder":
                await hold.wait()

    holder = asyncio.create_task(call("holder", False))
    await asyncio.sleep(0)
    polls = [asyncio.create_task(call(f"poll{i}", False)) for i in range(2)]
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(call("cancelled", True))
    await asyncio.sleep(0)
    cancelled.cancel()  # a waiter that gives up leaves no turn behind
    submit = asyncio.create_task(call("submit", True))
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(holder, *polls, submit)
    assert order == ["holder", "submit", "poll0", "poll1"]
    async with turns.turn():  # every turn came back
        pass
    assert turns._free == 1


@pytest.mark.anyio
async def test_an_api_call_carries_the_clients_headers_its_own_over_them_and_its_timeout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with HttpProvider(base_url="https://api.test", secrets=(),
                            transport=httpx.MockTransport(handler)) as client:
        answer = await client.send("poll", "POST", "https://api.test/x", json={"a": 1},
                                   headers={"Accept": "application/json", "X-Call": "1"},
                                   timeout=httpx.Timeout(3.0))
        await client.send("poll", "GET", "https://api.test/y")
    assert answer.json() == {"ok": True}
    assert answer.request is seen[0]
    first, second = seen
    assert first.headers.get_list("accept") == ["application/json"]  # replaced, not added
    assert first.headers["x-call"] == "1"
    assert first.headers["user-agent"] == second.headers["user-agent"] == USER_AGENT
    assert first.headers["content-type"] == "application/json"
    assert first.content == b'{"a":1}'
    assert first.extensions["timeout"] == httpx.Timeout(3.0).as_dict()
    assert second.extensions["timeout"] == DEFAULT_TIMEOUT.as_dict()
    assert "x-call" not in second.headers  # a call's headers stay with that call
    assert second.headers["accept"] == "*/*"
