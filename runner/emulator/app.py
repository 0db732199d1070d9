"""The emulator as one Starlette application.

=============================  ====================================================
each installed provider's API  its routes (``EmulatorSpec.routes``) under its path,
                               e.g. ``/acme/v1/…``: see ``runner/emulator/<name>.py``
``/files/…``                   uploads and outputs (public, like a CDN)
``/__stats``, ``/__reset``,    counters, reset, fault spec at run time, the clock
``/__faults``, ``/__clock``,   (tests), index; never faulted
``/__``
=============================  ====================================================

Every faultable request first draws its fault (:mod:`runner.emulator.faults`) and counts it
in ``/__stats`` at once, then settles the tasks whose time is up, then runs the handler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from runner.config import EMULATOR_IDENTITY
from runner.emulator.config import EmulatorConfig
from runner.emulator.faults import Decision, FaultSpec, SocketFault
from runner.emulator.http import (
    CONNECTION_KEY,
    DroppedConnection,
    ErrorRenderer,
    FileResponse,
    Remembered,
    base_url,
    s3_error,
    server_error,
    too_many_requests,
)
from runner.emulator.state import CREATED_HERE, Clock, EmulatorState, Task
from runner.plugins import Registry, registry
from runner.spec import EmulatorSpec, ProviderSpec

Handler = Callable[[Request, EmulatorState], Awaitable[Response]]
SocketHandler = Callable[[WebSocket, EmulatorState, "SocketFault | None"], Awaitable[None]]
Endpoint = Callable[[Request], Awaitable[Response]]
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class EmulatorApp(Starlette):
    """Starlette, plus a handle on the client's connection so a fault can drop it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn's `send` is a method of its request cycle, which owns the transport
            cycle = getattr(send, "__self__", None)
            if cycle is not None and hasattr(cycle, "transport"):
                scope[CONNECTION_KEY] = cycle
        await super().__call__(scope, receive, send)


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _keep_rendering(app: Starlette, state: EmulatorState) -> None:
    """Run the renderer of planned outputs (``EmulatorConfig.render_ahead``) unless it runs."""
    running: asyncio.Task[None] | None = getattr(app.state, "renderer", None)
    if running is None or running.done():
        app.state.renderer = asyncio.get_running_loop().create_task(_render_ahead(state))


async def _render_ahead(state: EmulatorState) -> None:
    """Render each planned output when it is due, one at a time (off the event loop), until
    none is planned; the next submit that plans one starts this again."""
    while True:
        for stored in state.renders_due():
            await stored.read()
            state.stats.rendered_ahead += 1
        due = state.next_render_at()
        if due is None:
            return
        # the emulator's clock may be moved or frozen (tests): look again within a second
        await asyncio.sleep(min(1.0, max(0.02, due - state.now())))


def _drawn(decision: Decision, state: EmulatorState) -> Decision:
    """Count a decision's faults when it is drawn, so the counts never depend on whether
    the client waited for the answer."""
    state.stats.faults.update(decision.counted())
    return decision


async def _delay(decision: Decision, state: EmulatorState) -> None:
    if decision.slow:
        await asyncio.sleep(state.faults.spec.slow_seconds)


def _counted(label: Callable[[Request], str], body: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        name = label(request)
        state.stats.request_started(name)
        status = "error"
        try:
            response = await body(request)
            status = "dropped" if isinstance(response, DroppedConnection) else str(
                response.status_code)
            return response
        finally:
            state.stats.request_finished(name, status)

    return endpoint


# "METHOD /path", the counters' name for an endpoint without a label
_path = Remembered(lambda request: f"{request.method} {request.url.path}",
                   ("method", "path", "query_string", "root_path"))


def api(handler: Handler, label: str | None = None,
        errors: ErrorRenderer | None = None) -> Endpoint:
    """An API endpoint: 429 / 5xx / drop (before or after the handler) / slow; ``errors``
    renders the 429s and 500s in the host's own envelope."""

    async def body(request: Request) -> Response:
        state = _state(request)
        decision = _drawn(state.faults.for_api(), state)
        if decision.error in ("429", "5xx"):
            # read the request through, so the refused connection stays reusable
            await request.body()
        await _delay(decision, state)
        if decision.error == "429":
            return too_many_requests(decision.retry_after, errors)
        if decision.error == "5xx":
            return server_error(decision.status, errors)
        if decision.error == "drop" and not decision.drop_after:
            return DroppedConnection()
        state.settle()
        created: list[Task] = []
        reset = CREATED_HERE.set(created)
        try:
            response = await handler(request, state)
        finally:
            CREATED_HERE.reset(reset)
        if created and state.config.render_ahead:
            _keep_rendering(request.app, state)
        if decision.error == "drop":
            # the handler ran (a submit created its task) but its answer never arrives
            for task in created:
                task.answer_lost = True
            state.stats.answers_lost += len(created)
            return DroppedConnection()
        return response

    return _counted((lambda _r: label) if label else _path, body)


async def _download(request: Request) -> Response:
    state = _state(request)
    decision = _drawn(state.faults.for_download(), state)
    await _delay(decision, state)
    if decision.error == "5xx":
        return server_error(decision.status)
    if decision.error == "drop":
        return DroppedConnection()
    stored = state.files.get(request.path_params["path"])
    if stored is None:
        return s3_error(404, "NoSuchKey", "The specified key does not exist.")
    data = await stored.read()
    cut = None
    if decision.error == "truncate":
        cut = len(data) // 2
    if request.method == "GET":
        state.stats.downloads += 1
        state.stats.download_bytes += len(data) if cut is None else cut
        if cut is None:
            stored.fetched += 1
    return FileResponse(data, stored.content_type, cut=cut)


async def _upload_target(request: Request, handler: Handler) -> Response:
    state = _state(request)
    decision = _drawn(state.faults.for_upload(), state)
    await _delay(decision, state)
    if decision.error == "5xx":
        await request.body()
        return server_error(decision.status)
    if decision.error == "drop" and not decision.drop_after:
        return DroppedConnection()
    response = await handler(request, state)
    if decision.error == "drop":
        return DroppedConnection()
    return response


# --- control routes (never faulted, never counted) -----------------------------------------
async def _stats(request: Request) -> Response:
    return JSONResponse(_state(request).snapshot())


async def _reset(request: Request) -> Response:
    _state(request).reset()
    return JSONResponse({"ok": True})


async def _faults(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        try:
            doc = json.loads(await request.body() or b"{}")
            spec = FaultSpec.parse(doc.get("faults", "") if isinstance(doc, dict) else "")
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        state.set_faults(spec)
    return JSONResponse({"ok": True, "faults": str(state.faults.spec)})


async def _clock(request: Request) -> Response:
    """``POST {"freeze": true}`` stops the emulator's clock (tasks neither progress nor
    finish), ``{"freeze": false}`` restarts it from where it stood, ``{"advance": seconds}``
    moves it (negative: back) — so a test holds tasks unfinished, then finishes them,
    without depending on timing."""
    state = _state(request)
    if request.method == "POST":
        try:
            doc = json.loads(await request.body() or b"{}")
            advance = float(doc.get("advance", 0))
            freeze = doc.get("freeze")
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        if freeze is True and state.frozen_at is None:
            state.frozen_at = state.now()
        elif freeze is False and state.frozen_at is not None:
            state.clock_offset = state.frozen_at - state.clock()
            state.frozen_at = None
        if state.frozen_at is not None:
            state.frozen_at += advance
        else:
            state.clock_offset += advance
        state.poke()
    return JSONResponse({"ok": True, "offset": state.clock_offset,
                         "frozen": state.frozen_at is not None, "now": state.now()})


async def _index(request: Request) -> Response:
    state = _state(request)
    if not state.config.identify:
        return JSONResponse({"message": "Not Found"}, status_code=404)
    base = base_url(request)
    return JSONResponse({
        "name": EMULATOR_IDENTITY,  # how a run knows its endpoint is an emulator
        **{f"{name}_base_url": f"{base}{spec.emulator.path}"
           for name, spec in state.specs.items() if spec.emulator is not None},
        **{f"{name}_push_url": f"ws{base[len('http'):]}{spec.emulator.push_path}"
           for name, spec in state.specs.items()
           if spec.emulator is not None and spec.emulator.push_path},
        "stats": f"{base}/__stats",
        "config": state.describe(),
        "faults": str(state.faults.spec),
    })


class Kit:
    """What a provider's emulator routes are built with (``EmulatorSpec.routes(kit)``):
    handlers ``async (request, state) -> Response`` wrapped with the emulator's shared
    faults and counters, so every host meets the same chaos. ``kit.name`` is the
    provider's name (``state.part(kit.name)`` its account), ``kit.path`` where its API
    lives (``EmulatorSpec.path``)."""

    ALL_METHODS = ALL_METHODS

    def __init__(self, name: str, spec: EmulatorSpec) -> None:
        self.name = name
        self.provider = name  # the name it had first
        self.spec = spec
        self.path = spec.path

    def api(self, handler: Handler, label: str | None = None) -> Endpoint:
        """An API endpoint: 429 / 5xx / drop (before or after the handler) / slow, the
        429s and 500s in the host's envelope (``EmulatorSpec.errors``)."""
        return api(handler, label, self.spec.errors)

    def socket(self, handler: SocketHandler) -> Callable[[WebSocket], Awaitable[None]]:
        """A push channel (websocket) endpoint: each connection draws its socket fault
        (refused at the handshake here; ``socket_drop`` / ``socket_silent`` are given to
        the handler to act out) and is counted in ``/__stats`` ``push``."""
        async def endpoint(websocket: WebSocket) -> None:
            state: EmulatorState = websocket.app.state.emulator
            fault = state.faults.for_socket()
            if fault is not None:
                state.stats.faults[fault] += 1
            if fault == "socket_refuse":
                state.stats.push["refused"] += 1
                await websocket.close(code=1008)  # before accept: HTTP 403
                return
            state.stats.push["connections"] += 1
            await handler(websocket, state, fault)

        return endpoint

    def upload(self, handler: Handler, label: str) -> Endpoint:
        """An upload target (presigned POST): upload faults (5xx, drop, slow)."""
        async def body(request: Request) -> Response:
            return await _upload_target(request, handler)

        return _counted(lambda _r: label, body)


def emulated_providers(reg: Registry | None = None) -> dict[str, ProviderSpec]:
    """The providers of ``reg`` (default: the installed ones) that ship an emulator, by
    name."""
    reg = registry() if reg is None else reg
    return {name: spec for name, spec in reg.providers.items() if spec.emulator is not None}


def create_app(config: EmulatorConfig | None = None, *, clock: Clock | None = None,
               registry: Registry | None = None) -> Starlette:
    """The emulator for ``config``, serving every provider of ``registry`` (default: the
    installed ones) that ships an emulator; ``clock`` (unix seconds) is injectable for
    tests. A provider option ``config`` sets that its provider does not declare raises
    ``ValueError``."""
    config = config or EmulatorConfig()
    specs = emulated_providers(registry)
    state = EmulatorState(config, clock, specs)
    routes: list[BaseRoute] = []
    for name, spec in specs.items():
        assert spec.emulator is not None
        routes.extend(spec.emulator.routes(Kit(name, spec.emulator)))
    routes += [
        Route("/files/{path:path}", _counted(lambda r: f"{r.method} /files", _download),
              methods=["GET", "HEAD"]),
        Route("/__stats", _stats, methods=["GET"]),
        Route("/__reset", _reset, methods=["POST"]),
        Route("/__faults", _faults, methods=["GET", "POST"]),
        Route("/__clock", _clock, methods=["GET", "POST"]),
        Route("/__", _index, methods=["GET"]),
        Route("/", _index, methods=["GET"]),
    ]
    app = EmulatorApp(routes=routes)
    app.state.emulator = state
    return app
