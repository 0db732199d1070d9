"""The web app of ``seedbatch view``: a Starlette app over a folder of runs.

Routes (the page is ``static/index.html``, its script ``app.js``; nothing is fetched from
anywhere else)::

    GET  /                              the page (runs list, gallery, compare, viewer)
    GET  /static/<file>                 its script and style
    GET  /api/runs                      every run, newest first (live: poll it)
    GET  /api/runs/<run>                one run's gallery: jobs, outputs, verdicts, axes
    GET  /api/compare?a=<run>&b=<run>   two runs, jobs matched by name
    GET  /api/compare?run=<run>&axis=<axis>&a=<value>&b=<value>   two values of one axis
    POST /api/verdict                   {"run", "key", "index", "verdict"?, "stars"?,
                                         "note"?, "clear"?} → the image's verdict now
    GET  /image/<run>/outputs/<path>    an output, from its run directory only
    GET  /thumb/<run>/outputs/<path>    its JPEG thumbnail

Files are served only from inside their run directory once every symlink is resolved
(:meth:`RunsFolder.output_file`), with an ``ETag`` and ``Cache-Control``; a conditional
request that matches gets ``304``. Requests must name this server in ``Host`` (no DNS
rebinding), and a verdict must come as JSON from this origin (no cross-site form posts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runner.emulator.server import app_in_thread, bind_socket, make_server, url_for
from runner.errors import ConfigError, RunDirError
from runner.review.compare import compare_runs, compare_values
from runner.review.picks import Change, set_verdict, verdict_for
from runner.review.runs import RunsFolder

STATIC = Path(__file__).resolve().parent / "static"
IMAGE_CACHE = "private, max-age=86400"  # outputs never change once written
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _guarded(handler: Handler) -> Handler:
    """Turn seedbatch's errors into JSON answers: 404 for a run or file that is not there,
    400 for bad input."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except RunDirError as exc:
            return _error(404, str(exc))
        except ConfigError as exc:
            return _error(400, str(exc))

    return wrapper


def _etag(path: Path) -> tuple[str, str]:
    stat = path.stat()
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"', formatdate(stat.st_mtime, usegmt=True)


def _not_modified(request: Request, etag: str) -> bool:
    asked = request.headers.get("if-none-match", "")
    return etag in [tag.strip() for tag in asked.split(",")]


def create_app(runs_dir: str | Path, *, allowed_hosts: tuple[str, ...] = ("*",)) -> Starlette:
    """The app over the runs directly under ``runs_dir``."""
    runs = RunsFolder(runs_dir)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def list_runs(request: Request) -> Response:
        rows = await run_in_threadpool(runs.summaries)
        return JSONResponse({"runs_dir": str(runs.root), "runs": rows},
                            headers={"Cache-Control": "no-store"})

    async def one_run(request: Request) -> Response:
        doc = await run_in_threadpool(runs.gallery, request.path_params["run"])
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def compare(request: Request) -> Response:
        q = request.query_params
        if "run" in q:
            if not (q.get("axis") and q.get("a") is not None and q.get("b") is not None):
                raise ConfigError("compare within a run needs axis, a and b")
            doc = await run_in_threadpool(runs.gallery, q["run"])
            return JSONResponse(compare_values(doc, q["axis"], q["a"], q["b"]))
        if not (q.get("a") and q.get("b")):
            raise ConfigError("compare needs two runs: ?a=<run>&b=<run>")
        doc_a = await run_in_threadpool(runs.gallery, q["a"])
        doc_b = await run_in_threadpool(runs.gallery, q["b"])
        return JSONResponse(compare_runs(doc_a, doc_b))

    async def verdict(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send the verdict as application/json")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return _error(403, "verdicts are taken from this page only")
        try:
            body = await request.json()
        except ValueError:
            raise ConfigError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ConfigError("expected a JSON object")
        return await run_in_threadpool(_record, body)

    def _record(body: dict[str, Any]) -> Response:
        run_id, key, index = body.get("run"), body.get("key"), body.get("index")
        if not isinstance(run_id, str) or not isinstance(key, str):
            raise ConfigError("run and key must be strings")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ConfigError("index must be a whole number")
        loaded = runs.load(run_id)
        job = next((j for j in loaded.report.get("jobs", []) if j.get("key") == key), None)
        if job is None:
            raise RunDirError(f"run {run_id} has no job with key {key[:12]}…")
        if index not in {o.get("index") for o in job.get("outputs", [])}:
            raise RunDirError(f"job {job['name']} of run {run_id} has no image {index}")
        change = Change(verdict=body.get("verdict"), stars=body.get("stars"),
                        note=body.get("note"), clear=bool(body.get("clear")))
        path = runs.picks_file(loaded.report)
        if path is None or not path.parent.is_dir():
            return _error(409, f"the manifest's folder of run {run_id} is not here "
                               f"({path.parent if path else 'no manifest path'}); "
                               "verdicts cannot be saved")
        manifest_name = Path(loaded.report["manifest"]["path"]).name
        picks = set_verdict(path, key, job["name"], index, change, manifest_name)
        shown = verdict_for(picks, key, job["name"], index)
        return JSONResponse({**shown.to_dict(), "picks_file": str(path)})

    async def image(request: Request) -> Response:
        path = await run_in_threadpool(runs.output_file, request.path_params["run"],
                                       request.path_params["path"])
        etag, modified = _etag(path)
        headers = {"Cache-Control": IMAGE_CACHE, "ETag": etag, "Last-Modified": modified,
                   "X-Content-Type-Options": "nosniff"}
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, headers=headers)

    async def thumb(request: Request) -> Response:
        run_id, rel = request.path_params["run"], request.path_params["path"]
        path = await run_in_threadpool(runs.output_file, run_id, rel)
        etag, modified = _etag(path)
        etag = etag[:-1] + '-t"'
        headers = {"Cache-Control": IMAGE_CACHE, "ETag": etag, "Last-Modified": modified,
                   "X-Content-Type-Options": "nosniff"}
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        data = await run_in_threadpool(runs.thumbnail, run_id, rel)
        if data is None:
            return _error(415, f"{rel} is not an image seedbatch can read")
        return Response(data, media_type="image/jpeg", headers=headers)

    routes = [
        Route("/", index),
        Route("/api/runs", _guarded(list_runs)),
        Route("/api/runs/{run}", _guarded(one_run)),
        Route("/api/compare", _guarded(compare)),
        Route("/api/verdict", _guarded(verdict), methods=["POST"]),
        Route("/image/{run}/{path:path}", _guarded(image)),
        Route("/thumb/{run}/{path:path}", _guarded(thumb)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes,
                    middleware=[Middleware(TrustedHostMiddleware,
                                           allowed_hosts=list(allowed_hosts))])
    app.state.runs = runs
    return app


def is_loopback(host: str) -> bool:
    return host.strip("[]") in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def allowed_hosts_for(host: str) -> tuple[str, ...]:
    """The Host header values to accept: the loopback names for a loopback server; any
    for one bound to the network (then anyone who can reach it can look and pick)."""
    return LOOPBACK_NAMES if is_loopback(host) else ("*",)


@dataclass(frozen=True)
class ViewServer:
    url: str
    app: Starlette


@contextlib.contextmanager
def serve_in_thread(runs_dir: str | Path, host: str = "127.0.0.1",
                    port: int = 0) -> Iterator[ViewServer]:
    """The app on ``host:port`` (a free port by default) in a background thread, until the
    block ends."""
    app = create_app(runs_dir, allowed_hosts=allowed_hosts_for(host))
    with app_in_thread(app, host, port, what="the viewer") as url:
        yield ViewServer(url, app)


def serve(runs_dir: str | Path, host: str, port: int,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in front until interrupted; ``on_ready(url)`` once the socket is bound."""
    app = create_app(runs_dir, allowed_hosts=allowed_hosts_for(host))
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                          "pick another --port") from None
    server = make_server(app)
    url = url_for(host, sock.getsockname()[1])
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
