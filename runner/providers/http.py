"""HTTP plumbing shared by the provider clients: one pooled client, typed errors, counters.

Every remote call goes through :meth:`HttpProvider.send`, which counts it by kind and turns
transport failures into :mod:`runner.errors` types. Where a request may have reached the
provider matters::

    nothing was sent (refused connection, DNS, connect timeout, no free pooled connection)
        → ConnectFailed, for every kind of call
    sent, answer lost (read timeout, connection reset, server hung up, write failed mid-body)
        → UnknownOutcome for a call that creates a task (a task may exist and be billed)
        → ServerError for everything else: polls, cancels, uploads and downloads are safe to
          repeat, so a lost answer is just a transient failure there

The clients never retry: the executor decides what to do with each error.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from runner.catalog import ModelSpec, get_model
from runner.errors import (
    AuthError,
    ConnectFailed,
    JobRejected,
    ProviderError,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import Job
from runner.providers.transport import AiohttpTransport
from runner.version import __version__

log = logging.getLogger(__name__)

USER_AGENT = f"seedbatch/{__version__}"
#: API calls: a slow answer after 60 s is treated as lost.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=60.0)
#: Downloads of outputs and uploads of reference images: big bodies, more patience.
TRANSFER_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=60.0)
REQUEST_KINDS = ("submit", "poll", "cancel", "upload", "download", "balance")
#: API calls one client sends at once, whatever its task concurrency: a task in flight needs
#: no open connection, and a connection pool's bookkeeping grows with the connections and
#: requests it holds. Calls beyond this wait here, outside the pool (:class:`_Turns`).
MAX_PARALLEL_REQUESTS = 8
#: Downloads one client streams at once. They have their own connections: a long download
#: never makes an API call (a submit above all) wait for a turn.
MAX_PARALLEL_DOWNLOADS = 4
EXCERPT_CHARS = 200
#: Parsed API URLs kept per client (the cache starts over when full).
PARSED_URLS = 256

# httpx exceptions raised before a single byte of the request left this machine.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
             httpx.ProxyError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN → None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def excerpt(text: str, secrets: tuple[str, ...] = (), limit: int = EXCERPT_CHARS) -> str:
    """A short one-line piece of a response body for an error message, secrets masked."""
    flat = re.sub(r"\s+", " ", redact(text, secrets)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def http_status_error(
    response: httpx.Response, provider: str, secrets: tuple[str, ...] = (), *, detail: str = ""
) -> ProviderError | None:
    """The error an HTTP status means on its own, whatever the body says; None for 2xx/3xx.

    401/403 → AuthError, 429 → RateLimited (with Retry-After), 408 and 5xx → ServerError,
    any other 4xx → JobRejected (the request itself was refused)."""
    status = response.status_code
    if status < 400:
        return None
    if not detail:
        detail = excerpt(response.text, secrets) if response.is_closed else ""
    text = f"HTTP {status}" + (f": {detail}" if detail else "")
    kw: dict[str, Any] = {"provider": provider, "http_status": status}
    if status in (401, 403):
        return AuthError(f"credentials refused — {text}", **kw)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(f"rate limited — {text}", retry_after=retry_after, **kw)
    if status == 408 or status >= 500:
        return ServerError(f"server error — {text}", **kw)
    return JobRejected(f"request refused — {text}", **kw)


class _Turns:
    """At most ``n`` requests at once; a request that creates a task goes before the others
    waiting (its job holds no task yet, while a poll can wait: with thousands of tasks in
    flight, polls queued first would otherwise hold every submit back)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._first: deque[asyncio.Future[None]] = deque()
        self._then: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, first: bool = False) -> AsyncIterator[None]:
        if self._free > 0 and not self._first and not self._then:
            self._free -= 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            (self._first if first else self._then).append(waiter)
            try:
                await waiter  # the releaser passed its turn on to this waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a turn just as it was cancelled
                else:
                    with contextlib.suppress(ValueError):
                        (self._first if first else self._then).remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in (self._first, self._then):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1


class HttpProvider:
    """Base of the provider clients: one pooled ``httpx.AsyncClient`` and request counters."""

    name: str = ""

    def __init__(
        self,
        *,
        base_url: str,
        secrets: tuple[str, ...],
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        concurrency: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secrets = tuple(s for s in secrets if s)
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.transfer_timeout = TRANSFER_TIMEOUT if timeout is None else timeout
        slots = max(1, concurrency)
        parallel = min(2 * slots + 4, MAX_PARALLEL_REQUESTS)
        connections = parallel + MAX_PARALLEL_DOWNLOADS
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections, keepalive_expiry=30.0)
        self._parallel = _Turns(parallel)
        self._downloads = asyncio.Semaphore(MAX_PARALLEL_DOWNLOADS)
        self._transport = transport or AiohttpTransport(max_connections=connections,
                                                        keepalive_expiry=30.0)
        self.client = httpx.AsyncClient(
            transport=self._transport,
            limits=limits,
            timeout=self.timeout,
            headers={"User-Agent": USER_AGENT},
            http1=True,
            http2=False,
            follow_redirects=False,
            # The transport reads the proxy settings of the environment; httpx's own
            # trust_env would read ~/.netrc on every request.
            trust_env=False,
        )
        self.requests_sent: Counter[str] = Counter({kind: 0 for kind in REQUEST_KINDS})
        self._parsed: dict[str, httpx.URL] = {}
        # What every request carries (httpx's defaults and the User-Agent), by lower-case name
        self._base_headers = {name.lower(): (name, value)
                              for name, value in self.client.headers.multi_items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def spec_for(self, job: Job) -> ModelSpec:
        """The catalog entry of ``job``'s model, which must belong to this provider."""
        spec = get_model(job.model)
        if spec is None or spec.provider != self.name:
            raise JobRejected(f"{job.model!r} is not a {self.name.capitalize()} model",
                              provider=self.name)
        return spec

    async def __aenter__(self) -> HttpProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- errors ---------------------------------------------------------------------------

    def _excerpt(self, text: str) -> str:
        return excerpt(text, self._secrets)

    def transport_error(self, exc: httpx.TransportError, *, creates: bool,
                        what: str) -> ProviderError:
        """Map a transport failure to a typed error (see the module docstring)."""
        reason = self._excerpt(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if isinstance(exc, _NOT_SENT):
            return ConnectFailed(f"{what}: could not reach the server, nothing was sent "
                                 f"({reason})", provider=self.name)
        if creates:
            return UnknownOutcome(f"{what}: the request was sent but its answer was lost "
                                  f"({reason}); a task may have been created", provider=self.name)
        return ServerError(f"{what}: the answer was lost ({reason})", provider=self.name)

    def json_body(self, response: httpx.Response, what: str) -> dict[str, Any] | None:
        """The JSON object a response carries, or None when it is not one."""
        try:
            doc = response.json()
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def not_json_error(self, response: httpx.Response, what: str) -> ProviderError:
        text = self._excerpt(response.text) or "(empty body)"
        return ServerError(f"{what}: answer is not a JSON object (HTTP {response.status_code}, "
                           f"{response.headers.get('content-type', 'no content type')}): {text}",
                           provider=self.name, http_status=response.status_code)

    # -- requests -------------------------------------------------------------------------

    def _request(self, method: str, url: httpx.URL, *, headers: Mapping[str, str] | None = None,
                 timeout: httpx.Timeout | None = None, **kwargs: Any) -> httpx.Request:
        """The request ``httpx.AsyncClient.request`` would build (the client's headers, the
        call's over them, the timeout), built once per call: no cookie jar (no host here
        sets one), no redirects (an API answer is never one)."""
        merged = self._base_headers
        if headers:
            merged = dict(merged)
            for name, value in headers.items():
                merged[name.lower()] = (name, value)
        limits = (timeout or self.timeout).as_dict()
        return httpx.Request(method, url, headers=list(merged.values()),
                             extensions={"timeout": limits}, **kwargs)

    async def _exchange(self, request: httpx.Request,
                        auth: httpx.Auth | None = None) -> httpx.Response:
        """Send ``request`` through the transport, ``auth``'s flow around it, and read each
        answer whole."""
        if auth is None:
            return await self._roundtrip(request)
        flow = auth.async_auth_flow(request)
        request = await flow.__anext__()
        while True:
            response = await self._roundtrip(request)
            try:
                request = await flow.asend(response)
            except StopAsyncIteration:
                return response

    async def _roundtrip(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def api_url(self, url: str) -> httpx.URL:
        """``url`` parsed: API endpoints are few and called thousands of times, so each is
        parsed once per client."""
        parsed = self._parsed.get(url)
        if parsed is None:
            if len(self._parsed) >= PARSED_URLS:
                self._parsed.clear()
            parsed = self._parsed[url] = httpx.URL(url)
        return parsed

    async def send(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        creates: bool = False,
        what: str = "",
        auth: httpx.Auth | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request and read its whole answer; transport failures become typed errors.

        ``creates`` marks the call that creates a remote task (a lost answer is then an
        UnknownOutcome)."""
        self.requests_sent[kind] += 1
        parsed = self.api_url(url)
        try:
            async with self._parallel.turn(first=creates):
                # built with its turn, not before: with thousands of tasks ending together,
                # the calls waiting for a turn hold no request (its headers, body, URL)
                request = self._request(method, parsed, **kwargs)
                return await self._exchange(request, auth)
        except httpx.TransportError as exc:
            # `from None`: the httpx exception holds the request, signed headers included.
            raise self.transport_error(exc, creates=creates, what=what or kind) from None

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        """Open a provider output for a streaming download.

        Output URLs are public: no credential header is ever sent with them (this client has
        none by default; credentials are added per API call only). Redirects are followed.
        HTTP errors: 429 → RateLimited, 408/5xx → ServerError, any other 4xx (expired or
        missing output) → JobRejected. A CDN's 401/403 means an expired link, not wrong
        credentials, so it never becomes a (run-stopping) AuthError here."""
        if not url.startswith(("http://", "https://")):
            raise JobRejected(f"output URL is not http(s): {self._excerpt(url)}",
                              provider=self.name)
        self.requests_sent["download"] += 1
        try:
            async with self._downloads, self._get(url) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    detail = self._excerpt(body.decode("utf-8", "replace"))
                    status = response.status_code
                    if status in (401, 403):
                        raise JobRejected(f"download refused (link expired?) — HTTP {status}: "
                                          f"{detail}", provider=self.name, http_status=status)
                    err = http_status_error(response, self.name, self._secrets, detail=detail)
                    assert err is not None
                    raise err
                yield response
        except httpx.TransportError as exc:
            raise self.transport_error(exc, creates=False, what="download") from None

    @asynccontextmanager
    async def _get(self, url: str) -> AsyncIterator[httpx.Response]:
        """A streamed GET of a public URL, its redirects followed: straight through the
        transport, then, for a redirect, through ``httpx.AsyncClient``'s redirect handling."""
        request = self._request("GET", httpx.URL(url), timeout=self.transfer_timeout)
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            if not response.has_redirect_location:
                yield response
                return
            target = request.url.join(response.headers["location"])
        finally:
            await response.aclose()
        async with self.client.stream("GET", target, timeout=self.transfer_timeout,
                                      follow_redirects=True) as response:
            yield response

    def stats(self) -> dict[str, int]:
        return dict(self.requests_sent)


def as_float(value: Any) -> float | None:
    """A number the providers send as a string (``"0.003510000000"``), or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return int(number) if number is not None and number.is_integer() else None


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value not in (None, ""):
            return value
    return None
