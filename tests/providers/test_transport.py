"""The HTTP transport (httpx requests over aiohttp) against raw servers on a loopback socket.

What matters most is which failures may have reached the server: a lost answer to a call
that creates a task must be an UnknownOutcome (never resent blindly), and only a failure
that certainly happened before the request left may be a ConnectFailed."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from runner.errors import ConnectFailed, ServerError, UnknownOutcome
from runner.providers.http import HttpProvider
from runner.providers.transport import SMALL_BODY, AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 request: its request line, its headers (lower-cased) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *rest = head.decode("latin-1").split("\r\n")
    headers = {}
    for item in rest:
        if item:
            name, _, value = item.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return line, headers, body


def answer(status: int, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def keep_alive(respond: Callable[[str], bytes]) -> Handler:
    """A server side that answers each request of a kept-alive connection with
    ``respond(its request line)``, until the client closes it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                line, _, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(respond(line))
            await writer.drain()
        writer.close()

    return handler


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def provider(url: str, **timeouts: float) -> HttpProvider:
    timeout = httpx.Timeout(**{"connect": 5.0, "read": 20.0, "write": 20.0, "pool": 20.0,
                               **timeouts})
    return HttpProvider(base_url=url, secrets=(), timeout=timeout)


@pytest.mark.anyio
async def test_refused_connection_sent_nothing() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with provider(url) as client:
        with pytest.raises(ConnectFailed, match="nothing was sent"):
            await client.send("submit", "POST", f"{url}/run", creates=True, json={"a": 1})


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["hang up", "half an answer"])
async def test_answer_lost_after_the_request_left(how: str) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, _, body = await read_request(reader)
        seen.append(body)
        if how == "half an answer":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"taskid\":")
            await writer.drain()
        writer.close()

    async with serve(handler) as url, provider(url) as client:
        with pytest.raises(UnknownOutcome, match="a task may have been created"):
            await client.send("submit", "POST", f"{url}/run", creates=True, json={"a": 1})
        with pytest.raises(ServerError, match="answer was lost"):
            await client.send("poll", "POST", f"{url}/detail", json={"a": 2})
    # Each request reached the server exactly once: a POST is never repeated by the transport.
    assert seen == [b'{"a":1}', b'{"a":2}']


@pytest.mark.anyio
async def test_read_timeout_is_an_unknown_outcome_for_a_create() -> None:
    release = asyncio.Event()
    arrived = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        await read_request(reader)
        arrived += 1
        await release.wait()
        writer.close()

    async with serve(handler) as url, provider(url, read=0.3) as client:
        with pytest.raises(UnknownOutcome):
            await client.send("submit", "POST", f"{url}/run", creates=True, json={})
        release.set()
    assert arrived == 1


@pytest.mark.anyio
async def test_no_free_connection_in_time_sent_nothing() -> None:
    """The only connection is held by a request the server has not answered: the second
    request never leaves, and says so."""
    release = asyncio.Event()
    arrived = asyncio.Event()
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        arrived.set()
        await release.wait()
        writer.write(answer(200, b"{}"))
        await writer.drain()
        writer.close()

    transport = AiohttpTransport(max_connections=1)
    async with serve(handler) as url, httpx.AsyncClient(transport=transport) as client:
        first = asyncio.ensure_future(client.post(f"{url}/a", json={}))
        await arrived.wait()
        with pytest.raises(httpx.ConnectTimeout):
            await client.post(f"{url}/b", json={}, timeout=httpx.Timeout(20.0, pool=0.2))
        release.set()
        assert (await first).status_code == 200
    assert requests == 1


@pytest.mark.anyio
async def test_requests_arrive_as_httpx_built_them_and_connections_are_reused() -> None:
    """JSON, a small multipart form (sent at once) and a large one (streamed) arrive byte for
    byte with httpx's headers; every answer comes back over one kept-alive connection."""
    received: list[tuple[str, dict[str, str], bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            received.append(request)
            digest = hashlib.sha256(request[2]).hexdigest().encode()
            writer.write(answer(201, digest, "Content-Type: text/plain\r\nX-Seen: yes\r\n"))
            await writer.drain()
        writer.close()

    big = bytes(range(256)) * (2 * SMALL_BODY // 256)
    async with serve(handler) as url, provider(url) as client:
        plain = await client.send("submit", "POST", f"{url}/json", json={"prompt": "é"})
        small = await client.send("submit", "POST", f"{url}/form", data={"prompt": "x"},
                                  files={"image": ("a.png", b"\x89PNG small")})
        large = await client.send("upload", "POST", f"{url}/upload",
                                  files={"image": ("b.png", big)})
    assert [r.status_code for r in (plain, small, large)] == [201, 201, 201]
    assert plain.headers["x-seen"] == "yes"
    assert plain.reason_phrase == "X"
    for response, (line, headers, body) in zip((plain, small, large), received, strict=True):
        assert response.text == hashlib.sha256(body).hexdigest()
        assert headers["user-agent"].startswith("seedbatch/")
        assert line.startswith("POST /")
    assert received[0][2] == '{"prompt":"é"}'.encode()
    assert received[0][1]["content-type"] == "application/json"
    assert received[1][1]["content-type"].startswith("multipart/form-data; boundary=")
    assert received[2][2].count(big) == 1
    assert connections == 1


@pytest.mark.anyio
async def test_streamed_download_follows_a_redirect() -> None:
    payload = b"\x89PNG" + bytes(300_000)

    def respond(line: str) -> bytes:
        if line.startswith("GET /moved "):
            return answer(302, b"", "Location: /out.png\r\n")
        return answer(200, payload, "Content-Type: image/png\r\n")

    async with serve(keep_alive(respond)) as url, provider(url) as client, \
            client.stream(f"{url}/moved") as response:
        chunks = [chunk async for chunk in response.aiter_bytes(65536)]
    assert b"".join(chunks) == payload
    assert len(chunks) > 1
    assert client.requests_sent["download"] == 1


@pytest.mark.anyio
async def test_environment_proxy_is_used_unless_bypassed(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        lines.append(line)
        writer.write(answer(200, b"via proxy", "Connection: close\r\n"))
        await writer.drain()
        writer.close()

    target = f"http://example.invalid:{free_port()}/x"
    async with serve(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with provider("http://example.invalid") as client:
            response = await client.send("poll", "GET", target)
        assert response.text == "via proxy"
        assert lines == [f"GET {target} HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "example.invalid")
        async with provider("http://example.invalid") as client:
            with pytest.raises(ConnectFailed):  # direct: the name does not resolve
                await client.send("poll", "GET", target)
        assert len(lines) == 1


@pytest.mark.anyio
async def test_a_small_answer_is_read_whole_and_a_large_one_streamed() -> None:
    """An answer with a known length up to SMALL_BODY comes back read and closed (its
    connection already back in the pool); a larger one comes back open, to be streamed."""
    small, large = b"\x89PNG" + bytes(1000), b"\x89PNG" + bytes(SMALL_BODY + 1)

    def respond(line: str) -> bytes:
        body = large if line.startswith("GET /large ") else small
        return answer(200, body, "Content-Type: image/png\r\n")

    async with serve(keep_alive(respond)) as url, provider(url) as client:
        async with client.stream(f"{url}/small") as response:
            assert response.is_closed
            assert [chunk async for chunk in response.aiter_bytes(65536)] == [small]
        async with client.stream(f"{url}/large") as response:
            assert not response.is_closed
            chunks = [chunk async for chunk in response.aiter_bytes(65536)]
        assert b"".join(chunks) == large
        assert len(chunks) > 1
        answered = await client.send("poll", "POST", f"{url}/detail", json={})
        assert answered.content == small


@pytest.mark.anyio
async def test_a_small_compressed_answer_is_decoded() -> None:
    import gzip

    text = b'{"result": true, "padding": "' + b"x" * 4000 + b'"}'
    packed = gzip.compress(text)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(200, packed, "Content-Encoding: gzip\r\n"
                                         "Content-Type: application/json\r\n"))
        await writer.drain()
        writer.close()

    async with serve(handler) as url, provider(url) as client:
        response = await client.send("poll", "POST", f"{url}/detail", json={})
    assert response.content == text
    assert response.json()["result"] is True
