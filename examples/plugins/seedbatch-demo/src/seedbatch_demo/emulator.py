"""Demo Images in seedbatch's emulator: the API of this package's README under ``/demo/v1``.

Built only from what the emulator offers every provider (``EmulatorSpec.routes(kit)``):

* ``kit.api(handler, label)`` wraps each API handler with the emulator's shared faults and
  counters (429 with Retry-After, 5xx, dropped connections before or after the handler,
  slow answers; ``GET /__stats``), so this client meets the same chaos as the built-ins;
* ``state.now()`` (the emulator's clock, which tests may inject or move with
  ``POST /__clock``) and ``state.config`` (``latency``, ``jitter``, ``concurrency``,
  ``seed``, ``image_size``, ``output_pad_bytes``);
* the emulator's file store (``state.files`` of :class:`~runner.emulator.state.StoredFile`)
  and its PNG renderer: outputs are served under the emulator's ``/files/demo/…`` with the
  shared download faults (5xx, drops, truncated bodies).

Demo Images' own memory — the account's image jobs and balance — lives here, one
:class:`DemoAccount` per emulator application (``request.app.state.seedbatch_demo``). It
belongs to the file store its outputs are in: when ``POST /__reset`` gives the emulator a
new one, the account starts afresh too.

An image job is queued for the first fifth of its time, then running; it ends
``latency`` (± ``jitter``) seconds after it was created, as a pure function of the clock:
each request first settles the jobs whose time is up (billing the successful ones). A prompt
holding the word ``emulator:fail`` makes its job fail (not billed). ``GET`` / ``POST
/demo/v1/__account`` (never faulted, never counted) shows the account and sets its balance,
so a test can provoke the 402 answer.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.emulator.images import make_output
from runner.emulator.state import StoredFile
from runner.spec import ModelSpec
from seedbatch_demo.models import MODELS

PATH = "/demo/v1"
APP_STATE_KEY = "seedbatch_demo"
STARTING_BALANCE_USD = 100.0
QUEUED_SHARE = 0.2  # an image job is queued for this share of its time, then running
MAX_PROMPT_CHARS = 4000
FAIL_MARKER = re.compile(r"(?<![\w:])emulator:fail(?![\w:])")
BY_ENDPOINT = {m.endpoint: m for m in MODELS}


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def error(status: int, code: str, message: str, param: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "param": param}},
                        status_code=status, headers=headers)


@dataclass
class ImageJob:
    """One image job of the emulated account."""

    id: str
    model: ModelSpec
    prompt: str
    params: dict[str, Any]  # every parameter, defaults made explicit
    created: float
    duration: float
    fails: bool
    outcome: str | None = None  # "succeeded" | "failed" | "canceled" once ended
    finished: float | None = None
    outputs: list[str] = field(default_factory=list)  # paths under /files/
    cost_usd: float | None = None
    polls: int = 0

    @property
    def ends_at(self) -> float:
        return self.created + self.duration

    @property
    def price(self) -> float:
        """What it costs if it succeeds: list price × n."""
        return (self.model.price.usd_per_image or 0.0) * int(self.params["n"])

    def status(self, now: float) -> str:
        if self.outcome is not None:
            return self.outcome
        return "queued" if now < self.created + self.duration * QUEUED_SHARE else "running"


class DemoAccount:
    """The emulated Demo Images account of one emulator application."""

    def __init__(self, files: dict[str, StoredFile], seed: int | None) -> None:
        self.files = files  # the emulator's file store, where this account's outputs live
        self.rng = random.Random(seed)  # latency jitter
        self.images: dict[str, ImageJob] = {}
        self.active: dict[str, ImageJob] = {}
        self.balance_usd = STARTING_BALANCE_USD
        self.counts: Counter[str] = Counter()  # created, succeeded, failed, canceled, …
        self.billed_usd = 0.0
        self.rejections: Counter[str] = Counter()

    def reserved(self) -> float:
        """What the image jobs still in flight will cost if they succeed."""
        return sum(job.price for job in self.active.values())

    def settle(self, now: float, image_size: str, pad_to: int) -> None:
        """End every image job whose time is up; bill the successful ones."""
        for job in [j for j in self.active.values() if now >= j.ends_at]:
            del self.active[job.id]
            self._finish(job, image_size, pad_to)

    def _finish(self, job: ImageJob, image_size: str, pad_to: int) -> None:
        job.finished = job.ends_at
        if job.fails:
            job.outcome, job.cost_usd = "failed", 0.0
            self.counts["failed"] += 1
            return
        n = int(job.params["n"])
        for index in range(n):
            path = f"demo/{job.id}/{index}.png"
            caption = f"{job.model.endpoint} · {index + 1}/{n}"

            def render(prompt: str = job.prompt, w: int = job.params["width"],
                       h: int = job.params["height"], caption: str = caption) -> bytes:
                return make_output(prompt, w, h, mode=image_size, caption=caption,
                                   pad_to=pad_to)

            self.files[path] = StoredFile(path=path, content_type="image/png", render=render)
            job.outputs.append(path)
        job.outcome, job.cost_usd = "succeeded", job.price
        self.balance_usd -= job.price
        self.billed_usd += job.price
        self.counts["succeeded"] += 1

    def cancel(self, job: ImageJob, now: float) -> None:
        self.active.pop(job.id, None)
        job.outcome, job.finished, job.cost_usd = "canceled", now, 0.0
        self.counts["canceled"] += 1

    def describe(self) -> dict[str, Any]:
        return {"balance_usd": round(self.balance_usd, 9),
                "reserved_usd": round(self.reserved(), 9),
                "billed_usd": round(self.billed_usd, 9),
                "images": {k: self.counts[k] for k in
                           ("created", "succeeded", "failed", "canceled")},
                "active": len(self.active),
                "polls": sum(j.polls for j in self.images.values()),
                "rejections": dict(sorted(self.rejections.items()))}


def account_of(request: Request, state: Any) -> DemoAccount:
    """This application's account, created on first use and again after a reset."""
    account = getattr(request.app.state, APP_STATE_KEY, None)
    if not isinstance(account, DemoAccount) or account.files is not state.files:
        account = DemoAccount(state.files, state.config.seed)
        setattr(request.app.state, APP_STATE_KEY, account)
    return account


def validate(doc: dict[str, Any]) -> tuple[ModelSpec, str, dict[str, Any]] | JSONResponse:
    """The model, prompt and final parameters of a ``POST /v1/images`` body, or its first
    problem as a 400 answer naming the parameter."""
    model = doc.get("model")
    if not isinstance(model, str) or model not in BY_ENDPOINT:
        return error(400, "invalid_request", f"model must be one of: {', '.join(BY_ENDPOINT)}",
                     "model")
    spec = BY_ENDPOINT[model]
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return error(400, "invalid_request", "prompt is required", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        return error(400, "invalid_request", f"prompt is longer than {MAX_PROMPT_CHARS} "
                                             f"characters", "prompt")
    params = spec.with_defaults({k: v for k, v in doc.items() if k not in ("model", "prompt")})
    problems = spec.check(params, 0)
    if problems:
        where, message = problems[0]
        return error(400, "invalid_request", message, where.removeprefix("params."))
    return spec, prompt, params


class DemoApi:
    """The handlers, ``async (request, state) -> Response``, for one accepted API key."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def _open(self, request: Request, state: Any) -> tuple[DemoAccount, float, Response | None]:
        """The account, the time, and a 401 when the bearer token is not the key."""
        account = account_of(request, state)
        now = state.now()
        account.settle(now, state.config.image_size, state.config.output_pad_bytes)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key.encode()):
            account.rejections["auth"] += 1
            return account, now, error(401, "unauthorized", "Invalid API key: send "
                                       "Authorization: Bearer <DEMO_API_KEY>")
        return account, now, None

    def _doc(self, job: ImageJob, now: float, request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        status = job.status(now)
        return {
            "id": job.id,
            "model": job.model.endpoint,
            "status": status,
            "created_at": iso(job.created),
            "finished_at": iso(job.finished),
            "outputs": [{"url": f"{base}/files/{path}", "content_type": "image/png"}
                        for path in job.outputs] if status == "succeeded" else [],
            "cost_usd": job.cost_usd,
            "error": ({"code": "generation_failed", "message": "the pattern generator failed "
                       "on this prompt (emulated failure)"} if status == "failed" else None),
        }

    def _find(self, request: Request, account: DemoAccount) -> ImageJob | JSONResponse:
        job_id = request.path_params["id"]
        job = account.images.get(job_id)
        if job is None:
            account.rejections["not_found"] += 1
            return error(404, "not_found", f"no image job {job_id!r}")
        return job

    async def create(self, request: Request, state: Any) -> Response:
        account, now, denied = self._open(request, state)
        if denied is not None:
            return denied
        try:
            doc = json.loads(await request.body() or b"null")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            account.rejections["validation"] += 1
            return error(400, "invalid_request", "the body must be a JSON object")
        checked = validate(doc)
        if isinstance(checked, Response):
            account.rejections["validation"] += 1
            return checked
        spec, prompt, params = checked
        if len(account.active) >= state.config.concurrency:
            account.rejections["busy"] += 1
            return error(429, "too_many_active_tasks", f"at most {state.config.concurrency} "
                         f"image jobs in flight per account", headers={"Retry-After": "1"})
        job = ImageJob(id=f"img_{uuid.uuid4().hex[:16]}", model=spec, prompt=prompt,
                       params=params, created=now, duration=0.0,
                       fails=FAIL_MARKER.search(prompt) is not None)
        if account.balance_usd - account.reserved() < job.price - 1e-12:
            account.rejections["balance"] += 1
            return error(402, "insufficient_balance", f"this request costs ${job.price:.4f}; "
                         f"the balance is ${account.balance_usd - account.reserved():.4f}")
        jitter = state.config.jitter
        factor = 1.0 + (account.rng.uniform(-jitter, jitter) if jitter else 0.0)
        job.duration = max(0.0, state.config.latency * factor)
        account.images[job.id] = job
        account.active[job.id] = job
        account.counts["created"] += 1
        account.settle(now, state.config.image_size, state.config.output_pad_bytes)
        return JSONResponse({"id": job.id, "status": job.status(now), "model": spec.endpoint,
                             "created_at": iso(job.created),
                             "eta_seconds": round(job.duration, 3)}, status_code=202)

    async def get(self, request: Request, state: Any) -> Response:
        account, now, denied = self._open(request, state)
        if denied is not None:
            return denied
        job = self._find(request, account)
        if isinstance(job, Response):
            return job
        job.polls += 1
        return JSONResponse(self._doc(job, now, request))

    async def cancel(self, request: Request, state: Any) -> Response:
        account, now, denied = self._open(request, state)
        if denied is not None:
            return denied
        job = self._find(request, account)
        if isinstance(job, Response):
            return job
        if job.outcome is not None:
            return error(409, "not_cancelable", f"image job {job.id} has already "
                         f"{job.outcome}")
        account.cancel(job, now)
        return JSONResponse(self._doc(job, now, request))

    async def not_found(self, request: Request, state: Any) -> Response:
        return error(404, "not_found", f"no such route: {request.method} {request.url.path}")


async def account_route(request: Request) -> Response:
    """``GET`` the account; ``POST {"balance_usd": x}`` sets its balance (tests). Not
    wrapped by the kit (never faulted nor counted), so it finds the emulator's state where
    the emulator's own control routes do."""
    state = request.app.state.emulator
    account = account_of(request, state)
    account.settle(state.now(), state.config.image_size, state.config.output_pad_bytes)
    if request.method == "POST":
        try:
            doc = json.loads(await request.body() or b"{}")
            account.balance_usd = float(doc["balance_usd"])
        except (ValueError, TypeError, KeyError) as exc:
            return error(400, "invalid_request", f"send {{\"balance_usd\": number}} ({exc})")
    return JSONResponse(account.describe())


def routes(kit: Any) -> list[Route]:
    """Demo Images' routes. The accepted key is DEMO_API_KEY when the emulator is created,
    else the demo one — what a client under ``--emulate`` sends."""
    from seedbatch_demo import DEMO_KEY

    api = DemoApi(os.environ.get("DEMO_API_KEY") or DEMO_KEY)
    P = PATH
    return [
        Route(f"{P}/__account", account_route, methods=["GET", "POST"]),
        Route(f"{P}/images", kit.api(api.create, f"POST {P}/images"), methods=["POST"]),
        Route(f"{P}/images/{{id}}", kit.api(api.get, f"GET {P}/images/{{id}}"),
              methods=["GET"]),
        Route(f"{P}/images/{{id}}/cancel", kit.api(api.cancel, f"POST {P}/images/{{id}}/cancel"),
              methods=["POST"]),
        Route(f"{P}/{{rest:path}}", kit.api(api.not_found, f"* {P}/(unknown)"),
              methods=kit.ALL_METHODS),
    ]
