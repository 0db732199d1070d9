"""httpx's requests carried by aiohttp's connection pool and C HTTP parser.

The provider clients speak httpx (requests, responses, timeouts, redirects, error types);
this transport moves the bytes. httpx's own transport (httpcore, h11 and anyio) costs
about 1 ms of CPU per request on a two-core machine, and its pool examines every
connection each time a request starts or ends; aiohttp does the same work in about a third
of that (docs/performance.md, "The HTTP transport"). With thousands of jobs a run makes
three or more calls per job, so this is most of the client's own CPU.

What matters most here is which failures may have reached the server. httpx's exception
types say it, and :mod:`runner.providers.http` relies on them; aiohttp's are mapped onto
them conservatively — only a failure that certainly happened before a byte was written
(connect refused, DNS, TLS handshake, no free connection in time) becomes a connect error;
everything else, a server that hung up included, counts as sent. aiohttp repeats a request
on a reused connection only for idempotent methods (never a POST that creates a task).
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict

#: Bytes per chunk handed to httpx while a body streams (downloads re-chunk as they like).
CHUNK_BYTES = 64 * 1024
#: A streamed request body (a multipart form) no bigger than this is joined and sent at once.
SMALL_BODY = 256 * 1024


def _mapped(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error type an aiohttp failure stands for, or None if it is not one."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout  # no connection (new or pooled) in time: nothing sent
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError  # refused, DNS, TLS handshake, proxy: nothing sent
    if isinstance(exc, (aiohttp.NonHttpUrlClientError, aiohttp.InvalidUrlClientError)):
        return httpx.UnsupportedProtocol
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
                  | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.ClientError | OSError):
        return httpx.ReadError  # written, or maybe written: counts as sent
    return None


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        kind = _mapped(exc)
        if kind is None:
            raise
        raise kind(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                   request=request) from exc


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it; closing it frees the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


async def _request_body(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one ``aiohttp.ClientSession`` (made on first use, inside the
    running event loop) with at most ``max_connections`` connections."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 30.0,
                 trust_env: bool = True) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        # The environment's proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY…), read once: aiohttp's
        # own trust_env looks them up again for every request (~0.6 ms of CPU each).
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._proxy_for: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        key = (url.scheme, url.netloc.decode("ascii"))
        if key not in self._proxy_for:
            proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            if proxy and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                    key[1], self._proxies):
                proxy = None
            self._proxy_for[key] = proxy
        return self._proxy_for[key]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0,
                keepalive_timeout=self._keepalive,
                ssl=httpx.create_ssl_context(trust_env=self._trust_env))
            # httpx keeps the cookies (none are used) and follows redirects itself.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                auto_decompress=False, timeout=aiohttp.ClientTimeout())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1"))
                              for name, value in request.headers.raw)
        data: bytes | AsyncIterator[bytes] | None
        if isinstance(request.stream, httpx.ByteStream):  # (a redirect's copy is unread)
            data = b"".join(request.stream) or None
        elif int(request.headers.get("Content-Length") or SMALL_BODY + 1) <= SMALL_BODY:
            data = await request.aread() or None  # a small form: one write
        else:  # a streamed body (multipart with files): sent as it is read
            data = _request_body(request.stream)  # type: ignore[arg-type]
            headers.popall("Transfer-Encoding", None)  # aiohttp chunks it when need be
        with _as_httpx(request):
            response = await session.request(
                request.method, str(request.url), headers=headers, data=data,
                allow_redirects=False, compress=None, skip_auto_headers=("Content-Type",),
                proxy=self._proxy(request.url),
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout.get("pool"),
                                              sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read")))
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        length = response.content_length
        if length is not None and length <= SMALL_BODY:
            # An API answer (or a small output): read here, whole, and the connection freed
            # at once — no stream of chunks for httpx to gather.
            try:
                with _as_httpx(request):
                    body = await response.read()
            finally:
                response.release()
            return httpx.Response(status_code=response.status, headers=response.raw_headers,
                                  content=body, request=request, extensions=extensions)
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=_Body(response, request), request=request,
                              extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
