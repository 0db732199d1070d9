"""HTTP pieces shared by the emulated APIs: bodies, errors, and the faulty responses.

Dropped connections and truncated downloads must look, to a client, like the network
failed. Over a real socket (uvicorn) the response aborts the connection's transport, so
httpx sees the peer go away (``RemoteProtocolError``/``ReadError``). In process, through
``httpx.ASGITransport``, there is no socket: the response raises
``httpx.RemoteProtocolError`` instead, which ``ASGITransport`` (with its default
``raise_app_exceptions=True``) lets through to the caller — the same exception class a
socket drop produces, so client code is exercised identically either way.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CONNECTION_KEY = "seedbatch.emulator.connection"
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file sent as a multipart part."""

    filename: str
    content_type: str
    data: bytes


Fields = list[tuple[str, Any]]


class BodyError(ValueError):
    """The request body could not be read as JSON, multipart or a form."""


async def read_fields(request: Request, *, max_file_bytes: int) -> Fields:
    """The body's fields in order. JSON objects, multipart (files and text parts) and
    urlencoded forms are all accepted, whatever the Content-Type says: some vendors' own
    examples send a JSON body under ``Content-Type: multipart/form-data``. JSON lists become
    repeated fields."""
    body = await request.body()
    text_start = body.lstrip()[:1]
    if text_start in (b"{", b"["):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise BodyError(f"Request parameters are invalid. ({exc})") from None
        if not isinstance(doc, dict):
            raise BodyError("Request parameters are invalid. (expected a JSON object)")
        fields: Fields = []
        for name, value in doc.items():
            if isinstance(value, list):
                fields.extend((name, v) for v in value)
            else:
                fields.append((name, value))
        return fields
    if not body.strip():
        return []
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            async with request.form(max_files=1000, max_fields=1000,
                                    max_part_size=4 * 1024 * 1024) as form:
                fields = []
                for name, value in form.multi_items():
                    if isinstance(value, str):
                        fields.append((name, value))
                        continue
                    data = await value.read(max_file_bytes + 1)
                    if len(data) > max_file_bytes:
                        raise BodyError(f"Request files [{name}] exceed the "
                                        f"{max_file_bytes // (1024 * 1024)} MB limit")
                    fields.append((name, FilePart(value.filename or name,
                                                  value.content_type or "", data)))
                return fields
        except BodyError:
            raise
        except Exception as exc:  # the multipart parser's own errors
            raise BodyError(f"Request parameters are invalid. ({exc})") from None
    raise BodyError("Request parameters are invalid. (send JSON or multipart/form-data)")


def last_values(fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields:
        out[name] = value
    return out


def _host(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"host":
            return value
    return None


class Remembered:
    """What Starlette makes of a request's URL, remembered by everything it is made from
    (scheme, server, Host header and the parts asked for): making it again is most of a
    small request's routing. At most ``limit`` answers are kept."""

    def __init__(self, make: Callable[[Request], str], parts: tuple[str, ...],
                 limit: int = 4096) -> None:
        self.make, self.parts, self.limit = make, parts, limit
        self.known: dict[tuple[Any, ...], str] = {}

    def __call__(self, request: Request) -> str:
        scope = request.scope
        key = (scope.get("scheme"), scope.get("server"), _host(scope),
               *(scope.get(part) for part in self.parts))
        try:
            found = self.known.get(key)
        except TypeError:  # an unhashable scope value: made each time
            return self.make(request)
        if found is None:
            found = self.make(request)
            if len(self.known) >= self.limit:
                self.known.clear()
            self.known[key] = found
        return found


#: The server's own address as the client reached it (works over a socket and through
#: ``httpx.ASGITransport`` alike).
base_url = Remembered(lambda request: str(request.base_url).rstrip("/"),
                      ("root_path", "app_root_path"))


def safe_name(name: str, default: str = "file") -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._")
    return name[:120] or default


# --- errors -------------------------------------------------------------------------------
#: Renders an error in a host's own envelope: (HTTP status, message, headers) → response
#: (``EmulatorSpec.errors``).
ErrorRenderer = Callable[[int, str, Mapping[str, str] | None], Response]


def s3_error(status: int, code: str, message: str) -> Response:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>")
    return Response(body, status_code=status, media_type="application/xml")


def server_error(status: int, render: ErrorRenderer | None = None) -> Response:
    """What a struggling API or its gateway answers: a 500 in the host's envelope when it
    has one (``render``), else (and for 502/503) a gateway's HTML page."""
    if status == 500 and render is not None:
        return render(500, "Internal server error", None)
    reason = {500: "Internal Server Error", 502: "Bad Gateway",
              503: "Service Temporarily Unavailable"}[status]
    return Response(f"<html><head><title>{status} {reason}</title></head><body><center>"
                    f"<h1>{status} {reason}</h1></center></body></html>\n",
                    status_code=status, media_type="text/html")


def too_many_requests(retry_after: int | None, render: ErrorRenderer | None = None) -> Response:
    """A 429, in the host's envelope when it has one (``render``), else plain text."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    message = "Too many requests, please slow down."
    if render is not None:
        return render(429, message, headers)
    return Response(message, status_code=429, headers=headers)


# --- failing responses ----------------------------------------------------------------------
async def _close_connection(scope: Scope, *, flush: bool) -> bool:
    """Close the client's connection under uvicorn; False when there is no socket."""
    cycle = scope.get(CONNECTION_KEY)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    if flush:
        transport.close()  # send what is buffered, then FIN
    else:
        transport.abort()  # RST, nothing more
    # let the server notice before we return, so it does not report an unfinished response
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.005)
    return True


class DroppedConnection(Response):
    """No answer at all: the connection goes away."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await _close_connection(scope, flush=False):
            return
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response. (emulated connection drop)")


class FileResponse(Response):
    """Bytes streamed in chunks under an exact Content-Length; ``cut`` stops early."""

    def __init__(self, data: bytes, media_type: str, cut: int | None = None) -> None:
        super().__init__(status_code=200, media_type=media_type)
        self.data = data
        self.cut = cut
        self.headers["content-length"] = str(len(data))
        self.headers["cache-control"] = "public, max-age=86400"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        view = memoryview(self.data)
        end = len(self.data) if self.cut is None else self.cut
        for start in range(0, end, CHUNK):
            await send({"type": "http.response.body",
                        "body": bytes(view[start:min(start + CHUNK, end)]), "more_body": True})
        if self.cut is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if await _close_connection(scope, flush=True):
            return
        raise httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body (received {end} "
            f"bytes, expected {len(self.data)}) (emulated truncated download)")
