"""The emulated Replicate API (``/replicate/v1``): predictions on the official models
``bytedance/seedream-4`` and ``bytedance/seedream-4.5``, the Files API, and the account
behind them (:class:`ReplicateState`: its token, credit, uploaded files).

Wire facts follow Replicate's HTTP reference and recorded answers (replicate-python's test
cassettes): ``POST models/<owner>/<name>/predictions`` answers 201 with the prediction;
``urls.get`` is ``<base>/predictions/<id>`` and ``urls.cancel`` that plus ``/cancel``;
errors are problem+json ``{"title", "detail", "status"}``; a 401 says "You did not pass a
valid authentication token"; a refused input is a 422 "Input validation failed" whose
``detail`` lists ``- input.<field>: <description>`` lines and whose ``invalid_fields`` holds
``{"type", "field", "description"}`` (types seen in real answers: ``required``, ``enum``,
``number_lte``, ``number_gte``, ``invalid_type``, ``additional_property_not_allowed``);
a throttled call is a 429 with ``Retry-After`` and "Request was throttled. Expected
available in N seconds."; no credit is a 402 "Insufficient credit".

A prediction is ``starting`` for the first quarter of its latency (Replicate's queue and
model boot), then ``processing``, then ``succeeded`` / ``failed`` (with ``error``), or
``canceled`` once cancelled. A finished prediction keeps its input and output for
``retention_seconds`` (Replicate: one hour); after that it shows ``data_removed: true``, no
output, and its files are gone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.catalog import ModelSpec, by_endpoint
from runner.emulator.http import base_url, safe_name
from runner.emulator.state import EmulatorState, ProviderContext, ProviderState, Task
from runner.media import sniff_image

NAME = "replicate"
TOKEN_VAR = "REPLICATE_API_TOKEN"
PATH = "/replicate/v1"
#: The model versions whose input schemas schemas/models/replicate-*.json follow.
VERSIONS = {
    "bytedance/seedream-4": "cf7d431991436f19d1c8dad83fe463c729c816d7a21056c5105e75c84a0aa7e9",
    "bytedance/seedream-4.5": "9fe3b8282dcb9d9063b05e33210a1432801f7c5a6641db944baefcec4886761a",
}
STARTING_SHARE = 0.25  # of a prediction's latency spent "starting"
SIDES = {"1K": 1024, "2K": 2048, "4K": 4096}
MAX_TOTAL_IMAGES = 15
MAX_FILE_BYTES = 100 * 1024 * 1024  # the Files API: 100 MB
BODY_KEYS = ("input", "webhook", "webhook_events_filter", "stream")
_ID_ALPHABET = string.ascii_lowercase + string.digits
FAILURE_TEXT = ("Prediction failed: the model raised an error while generating "
                "(emulated failure)")


# --- envelopes ----------------------------------------------------------------------------
def problem(status: int, title: str, detail: str, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    return JSONResponse({"title": title, "detail": detail, "status": status, **extra},
                        status_code=status, media_type="application/problem+json",
                        headers=dict(headers) if headers else None)


def throttled(seconds: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    unit = "second" if seconds == 1 else "seconds"
    return problem(429, "Request was throttled",
                   f"Request was throttled. Expected available in {seconds} {unit}.", headers)


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 429 or 500 of the shared fault injection, in Replicate's problem+json."""
    if status == 429:
        given = (headers or {}).get("Retry-After")
        seconds = int(given) if given and given.isdigit() else 1
        out = dict(headers or {})
        out.setdefault("Retry-After", str(seconds))  # Replicate always says when
        return throttled(seconds, out)
    return problem(status, "Internal Server Error", message, headers)


def not_found(detail: str = "The requested resource could not be found.") -> JSONResponse:
    return problem(404, "Not found", detail)


def invalid(fields: list[tuple[str, str, str]]) -> JSONResponse:
    """422 Input validation failed, one ``(type, field, description)`` per problem."""
    lines = "".join(f"- {f}: {d}\n" if f else f"- {d}\n" for _, f, d in fields)
    return problem(422, "Input validation failed", lines,
                   invalid_fields=[{"type": t, "field": f, "description": d}
                                   for t, f, d in fields])


# --- the account --------------------------------------------------------------------------
@dataclass
class ReplicateTask(Task):
    """A prediction: what Replicate lists back besides the shared fields."""

    version: str = ""
    input: dict[str, Any] = field(default_factory=dict)  # as it was sent
    data_removed: bool = False


@dataclass
class UploadedFile:
    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    md5: str
    created: float
    path: str  # under the emulator's /files/


class ReplicateState(ProviderState):
    """The emulated Replicate account: its token, its credit (USD), the Files API's files."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.token = self.credentials[TOKEN_VAR]
        self.retention = float(self.options["retention_seconds"])
        if self.retention <= 0:
            raise ValueError(f"{NAME}.retention_seconds must be > 0, not {self.retention}")
        self.credit = float(self.options["credit_usd"])
        if self.credit < 0:
            raise ValueError(f"{NAME}.credit_usd must be ≥ 0, not {self.credit}")
        self.files: dict[str, UploadedFile] = {}

    def new_id(self) -> str:
        return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))

    def bill(self, task: Task) -> None:
        super().bill(task)
        self.credit -= task.cost_usd

    def balances(self) -> dict[str, Any]:
        return {"replicate_usd": round(self.credit, 12)}


def account(state: EmulatorState) -> ReplicateState:
    part = state.part(NAME)
    assert isinstance(part, ReplicateState)
    return part


def make_state(context: ProviderContext) -> ReplicateState:
    return ReplicateState(context)


def check_auth(request: Request, state: EmulatorState) -> Response | None:
    """``Authorization: Bearer <token>`` (the older ``Token <token>`` is accepted too)."""
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    expected = account(state).token
    if scheme.lower() not in ("bearer", "token") or not given.strip() or not hmac.compare_digest(
            given.strip().encode(), expected.encode()):
        state.stats.rejections["auth"] += 1
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return None


# --- time and views -----------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def started_at(task: Task) -> float:
    return task.created + task.duration * STARTING_SHARE


def status_of(task: Task, now: float) -> str:
    if task.outcome == "cancelled":
        return "canceled"
    if task.outcome is not None:
        return task.outcome  # succeeded | failed
    return "starting" if now < started_at(task) else "processing"


def expire(task: ReplicateTask, state: EmulatorState) -> None:
    """Past its retention a finished prediction loses its input and output files."""
    if task.data_removed or task.finished is None or task.outcome == "cancelled":
        return
    if state.now() < task.finished + account(state).retention:
        return
    task.data_removed = True
    for out in task.outputs:
        state.files.pop(out.file.path, None)


def prediction_json(task: ReplicateTask, state: EmulatorState, base: str) -> dict[str, Any]:
    now = state.now()
    status = status_of(task, now)
    api = f"{base}{PATH}"
    started = started_at(task)
    if task.outcome == "cancelled" and task.finished is not None and task.finished < started:
        started_iso = None
    else:
        started_iso = iso(started) if now >= started or task.terminal else None
    output: list[str] | None = None
    if task.outcome == "succeeded" and not task.data_removed:
        output = [f"{base}/files/{o.file.path}" for o in task.outputs]
    metrics: dict[str, Any] = {}
    if task.outcome in ("succeeded", "failed") and task.finished is not None:
        metrics["predict_time"] = round(max(0.0, task.finished - started), 6)
        metrics["total_time"] = round(max(0.0, task.finished - task.created), 6)
        if task.outcome == "succeeded":
            metrics["image_count"] = len(task.outputs)
    logs = ""
    if status != "starting":
        logs = "Generating images...\n"
        if task.outcome == "succeeded":
            logs += f"Generated {len(task.outputs)} image(s)\n"
    return {
        "id": task.id,
        "model": task.model,
        "version": task.version,
        "input": {} if task.data_removed else task.input,
        "logs": logs,
        "output": output,
        "data_removed": task.data_removed,
        "error": FAILURE_TEXT if task.outcome == "failed" else None,
        "status": status,
        "source": "api",
        "created_at": iso(task.created),
        "started_at": started_iso,
        "completed_at": iso(task.finished) if task.terminal else None,
        "urls": {
            "cancel": f"{api}/predictions/{task.id}/cancel",
            "get": f"{api}/predictions/{task.id}",
            "web": f"{base}/p/{task.id}",
        },
        "metrics": metrics,
    }


# --- input validation ---------------------------------------------------------------------
def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _quote_all(values: list[Any]) -> str:
    return ", ".join(json.dumps(v) for v in values)


def check_value(name: str, prop: Mapping[str, Any], value: Any) -> tuple[str, str] | None:
    """The first problem with one input value: ``(type, description)``, or None."""
    want = prop.get("type")
    got = _type_name(value)
    ok = {"integer": got == "integer", "number": got in ("integer", "number"),
          "boolean": got == "boolean", "string": got == "string"}.get(str(want), True)
    if not ok:
        return "invalid_type", f"Invalid type. Expected: {want}, given: {got}"
    if "enum" in prop and value not in prop["enum"]:
        return "enum", f"{name} must be one of the following: {_quote_all(prop['enum'])}"
    if "minimum" in prop and value < prop["minimum"]:
        return "number_gte", f"Must be greater than or equal to {prop['minimum']}"
    if "maximum" in prop and value > prop["maximum"]:
        return "number_lte", f"Must be less than or equal to {prop['maximum']}"
    return None


def decode_data_uri(value: str) -> bytes | None:
    """The bytes of a ``data:<type>;base64,…`` URI, or None when it is not one."""
    head, sep, payload = value.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def resolve_image(value: Any, state: EmulatorState, api: str) -> tuple[str | None, str | None]:
    """(identity of a reference image, problem): a data URI by its content's hash, a file
    of the Files API by its hash, any other http(s) URL by itself."""
    if not isinstance(value, str) or not value:
        return None, f"Invalid type. Expected: string, given: {_type_name(value)}"
    if value.startswith("data:"):
        data = decode_data_uri(value)
        if data is None or sniff_image(data[:32]) is None:
            return None, "Does not match format 'uri': not a base64 data URI of an image"
        return f"sha256:{hashlib.sha256(data).hexdigest()}", None
    if value.startswith(f"{api}/files/"):
        found = account(state).files.get(value[len(f"{api}/files/"):].split("?", 1)[0])
        if found is None:
            return None, "File not found: the file does not exist or has expired"
        return f"sha256:{found.sha256}", None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return state.identity(value), None
    return None, "Does not match format 'uri'"


def validate_input(spec: ModelSpec, doc: Any, state: EmulatorState, api: str
                   ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The prediction's typed parameters (defaults filled in), prompt and image identities,
    and every problem ``(type, field, description)``."""
    problems: list[tuple[str, str, str]] = []
    if not isinstance(doc, dict):
        return {}, [("invalid_type", "input",
                     f"Invalid type. Expected: object, given: {_type_name(doc)}")]
    props: dict[str, Any] = spec.schema["properties"]
    prompt = doc.get("prompt")
    if "prompt" not in doc:
        problems.append(("required", "input", "prompt is required"))
    elif not isinstance(prompt, str):
        problems.append(("invalid_type", "input.prompt",
                         f"Invalid type. Expected: string, given: {_type_name(prompt)}"))
    params: dict[str, Any] = {}
    for name, value in doc.items():
        if name in ("prompt", "image_input"):
            continue
        if name not in props:
            # Emulator strictness: a misspelt input is refused rather than ignored.
            problems.append(("additional_property_not_allowed", "input",
                             f"Additional property {name} is not allowed"))
            continue
        found = check_value(name, props[name], value)
        if found:
            problems.append((found[0], f"input.{name}", found[1]))
        else:
            params[name] = value
    images: list[str] = []
    raw_images = doc.get("image_input", [])
    if not isinstance(raw_images, list):
        problems.append(("invalid_type", "input.image_input",
                         f"Invalid type. Expected: array, given: {_type_name(raw_images)}"))
        raw_images = []
    if len(raw_images) > spec.max_input_images:
        problems.append(("array_max_items", "input.image_input",
                         f"Array must have at most {spec.max_input_images} items"))
    for i, value in enumerate(raw_images):
        ident, bad = resolve_image(value, state, api)
        if bad:
            problems.append(("format", f"input.image_input.{i}", bad))
        elif ident is not None:
            images.append(ident)
    typed = spec.with_defaults(params)
    if not problems and typed.get("sequential_image_generation") == "auto" \
            and len(images) + typed["max_images"] > MAX_TOTAL_IMAGES:
        # The model's own rule ("Total images (input + generated) cannot exceed 15"), which
        # JSON Schema cannot say; the emulator refuses it at create.
        problems.append(("total_images", "input.max_images",
                         f"Total images (input + generated) cannot exceed {MAX_TOTAL_IMAGES}: "
                         f"{len(images)} input + max_images {typed['max_images']}"))
    return {"prompt": prompt, "params": typed, "images": images}, problems


def dimensions(params: Mapping[str, Any]) -> tuple[int, int]:
    """The output size: width × height for ``custom``, else the resolution's area at the
    aspect ratio (``match_input_image``: square, as the emulator does not measure)."""
    if params["size"] == "custom":
        return int(params["width"]), int(params["height"])
    side = SIDES[params["size"]]
    ratio = params.get("aspect_ratio", "1:1")
    a, b = (int(x) for x in ratio.split(":")) if ":" in ratio else (1, 1)
    return (max(8, round(side * math.sqrt(a / b) / 8) * 8),
            max(8, round(side * math.sqrt(b / a) / 8) * 8))


# --- endpoints ----------------------------------------------------------------------------
async def _json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None."""
    body = await request.body()
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def create(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    endpoint = f"{request.path_params['owner']}/{request.path_params['name']}"
    spec = by_endpoint(NAME, endpoint)
    if spec is None:
        state.stats.rejections["not_found"] += 1
        return not_found(f"Model {endpoint} not found (the emulator serves "
                         f"{', '.join(VERSIONS)})")
    doc = await _json_object(request)
    if doc is None:
        state.stats.rejections["validation"] += 1
        return problem(400, "Invalid JSON", "The request body is not a JSON object")
    top = [("additional_property_not_allowed", "", f"Additional property {k} is not allowed")
           for k in doc if k not in BODY_KEYS]
    if "input" not in doc:
        top.insert(0, ("required", "", "input is required"))
    api = f"{base_url(request)}{PATH}"
    req, problems = validate_input(spec, doc.get("input"), state, api) if "input" in doc \
        else ({}, [])
    if top or problems:
        state.stats.rejections["validation"] += 1
        return invalid(top + problems)
    params = req["params"]
    images = params["max_images"] if params["sequential_image_generation"] == "auto" else 1
    rep = account(state)
    price = rep.list_price(endpoint, images)[0]
    # what the predictions still running will cost if they succeed: their list prices
    if rep.credit - state.reserved(NAME) < price:
        state.stats.rejections["balance"] += 1
        return problem(402, "Insufficient credit",
                       "You have insufficient credit to run this model. Go to "
                       "https://replicate.com/account/billing#billing to purchase credit. "
                       "Once you purchase credit, please wait a few minutes before trying "
                       "again.")
    width, height = dimensions(params)
    task = state.new_task(NAME, model=endpoint, prompt=req["prompt"], params=params,
                          inputs=tuple(req["images"]), images=images, width=width,
                          height=height, cls=ReplicateTask, version=VERSIONS[endpoint],
                          input=doc["input"], reserve=price)
    assert isinstance(task, ReplicateTask)
    wait = prefer_wait(request.headers.get("prefer", ""))
    headers = None
    if wait is not None:
        # Sync mode: the answer is held until the prediction ends or ``wait`` seconds of
        # real time pass (the emulator's clock may stand still), then given as it stands.
        headers = {"Preference-Applied": f"wait={wait}"}
        deadline = time.monotonic() + wait
        while not task.terminal and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            state.settle()
        await _render_outputs(task)
    return JSONResponse(prediction_json(task, state, base_url(request)), status_code=201,
                        headers=headers)


def prefer_wait(header: str) -> int | None:
    """Seconds a ``Prefer: wait`` / ``wait=N`` header asks to hold the create (at most 60,
    Replicate's default and limit); None without one."""
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip()
            return min(int(value), 60) if value.isdigit() and int(value) > 0 else 60
    return None


def _find(request: Request, state: EmulatorState) -> ReplicateTask | Response:
    task = state.tasks.get((NAME, request.path_params["id"]))
    if not isinstance(task, ReplicateTask):
        state.stats.rejections["not_found"] += 1
        return not_found("Not found.")
    return task


async def _render_outputs(task: Task) -> None:
    for out in task.outputs:
        await out.file.read()


async def get(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    task = _find(request, state)
    if isinstance(task, Response):
        return task
    state.count_poll(task)
    expire(task, state)
    await _render_outputs(task)
    return JSONResponse(prediction_json(task, state, base_url(request)))


async def cancel(request: Request, state: EmulatorState) -> Response:
    """Cancel a prediction that has not ended; one that has is answered as it stands."""
    if (denied := check_auth(request, state)) is not None:
        return denied
    task = _find(request, state)
    if isinstance(task, Response):
        return task
    if not task.terminal:
        state.cancel(task)
    return JSONResponse(prediction_json(task, state, base_url(request)))


def file_json(f: UploadedFile, api: str) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "content_type": f.content_type, "size": f.size,
            "etag": f.md5, "checksums": {"sha256": f.sha256, "md5": f.md5}, "metadata": {},
            "created_at": iso(f.created), "expires_at": iso(f.created + 86400),
            "urls": {"get": f"{api}/files/{f.id}"}}


async def upload(request: Request, state: EmulatorState) -> Response:
    """``POST files``: multipart ``content`` (and optional ``metadata``) → 201 the file."""
    if (denied := check_auth(request, state)) is not None:
        return denied
    try:
        async with request.form(max_files=1, max_fields=10,
                                max_part_size=1024 * 1024) as form:
            part = form.get("content")
            data = await part.read(MAX_FILE_BYTES + 1) \
                if part is not None and not isinstance(part, str) else None
            name = getattr(part, "filename", None) or "file"
            ctype = getattr(part, "content_type", None) or "application/octet-stream"
    except Exception as exc:  # the multipart parser's own errors
        return invalid([("required", "", f"content is required (a multipart file: {exc})")])
    if data is None:
        return invalid([("required", "", "content is required")])
    if len(data) > MAX_FILE_BYTES:
        return problem(413, "Payload too large", "Files may be at most 100 MB")
    rep = account(state)
    file_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(40))
    stored = state.store(f"replicate/uploads/{file_id}/{safe_name(name)}", data, ctype)
    item = UploadedFile(id=file_id, name=safe_name(name), content_type=ctype, size=len(data),
                        sha256=stored.sha256,
                        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
                        created=state.now(), path=stored.path)
    rep.files[file_id] = item
    return JSONResponse(file_json(item, f"{base_url(request)}{PATH}"), status_code=201)


async def get_file(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    item = account(state).files.get(request.path_params["id"])
    if item is None:
        return not_found("Not found.")
    return JSONResponse(file_json(item, f"{base_url(request)}{PATH}"))


async def unknown(request: Request, state: EmulatorState) -> Response:
    return not_found()


def routes(kit: Any) -> list[Route]:
    """Replicate's routes; ``kit`` wraps handlers with the emulator's faults and counters."""
    P = PATH
    return [
        # labelled by template: /__stats counts one endpoint, not one per prediction id
        Route(f"{P}/models/{{owner}}/{{name}}/predictions",
              kit.api(create, f"POST {P}/models/{{owner}}/{{name}}/predictions"),
              methods=["POST"]),
        Route(f"{P}/predictions/{{id}}", kit.api(get, f"GET {P}/predictions/{{id}}"),
              methods=["GET"]),
        Route(f"{P}/predictions/{{id}}/cancel",
              kit.api(cancel, f"POST {P}/predictions/{{id}}/cancel"), methods=["POST"]),
        Route(f"{P}/files", kit.api(upload), methods=["POST"]),
        Route(f"{P}/files/{{id}}", kit.api(get_file, f"GET {P}/files/{{id}}"),
              methods=["GET"]),
        Route(f"{P}/{{rest:path}}", kit.api(unknown, f"* {P}/(unknown)"),
              methods=kit.ALL_METHODS),
    ]
