"""The emulated fal.ai queue API (``/fal``) for Seedream 4.0 and 4.5, and the fal account
behind it (:class:`FalState`: its key, the requests that never reached a model).

What it follows (docs/hosts/fal.md names the sources):

* ``POST /fal/<endpoint id>`` queues a request and answers ``{"request_id", "response_url",
  "status_url", "cancel_url", "queue_position"}``; the follow-up URLs use the app id without
  the endpoint's subpath (``/fal/fal-ai/bytedance/requests/<id>``);
* the queue does not look at the input: it is validated when a runner picks the request
  up, so an invalid input is a request that completes at once and whose result is fal's
  422 ``{"detail": [{"loc", "msg", "type"}]}`` (third-party reports against the live API
  say the same: TanStack/ai#396);
* status ``IN_QUEUE`` → ``IN_PROGRESS`` → ``COMPLETED`` over the emulated latency (HTTP 202
  until complete, then 200), ``queue_position`` while queued, ``logs`` (null unless
  ``?logs=1``), ``metrics.inference_time`` and, for a failure, ``error`` / ``error_type``;
* the result replays the model's answer: the output, or its error with the model's status;
* ``PUT cancel_url``: 202 ``CANCELLATION_REQUESTED`` (a queued request is removed and
  completes as ``client_cancelled``; a running one gets a signal Seedream does not act on:
  it runs on and is billed), 400 ``ALREADY_COMPLETED``, 404 ``NOT_FOUND``;
* ``Authorization: Key <key id>:<key secret>`` on every call, refused with 401 and fal's
  ``{"detail": "..."}``.

Stricter than fal in one way, on purpose: an input field the endpoint does not take is a
422 ``extra_forbidden`` (fal ignores it), so a misspelt parameter shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.catalog import ModelSpec, by_endpoint
from runner.emulator.http import base_url
from runner.emulator.state import EmulatorState, ProviderContext, ProviderState, Task

NAME = "fal"
KEY_VAR = "FAL_KEY"
PATH = "/fal"
ENDPOINTS = ("text-to-image", "edit")
MAX_IMAGE_URLS = 10  # "If over 10 images are sent, only the last 10 will be used."
MAX_REFS_PLUS_OUTPUTS = 15  # per generation: image inputs + max_images
QUEUE_SHARE = 0.25  # the share of a request's latency it spends IN_QUEUE
DOCS_ERRORS = "https://docs.fal.ai/errors"
# fal's image-size presets (its ImageSizeEnum, shared by its image models); "auto…" sizes
# follow the reference image or the resolution named, here a square.
PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576),
    "auto": (2048, 2048), "auto_2K": (2048, 2048), "auto_4K": (4096, 4096),
}
FAILED_TEXT = "The image could not be generated: the model service returned an error " \
              "(emulated failure)."
CANCELLED_TEXT = "Request was cancelled by the client"


# --- envelopes ----------------------------------------------------------------------------
def fal_error(status: int, detail: Any, headers: Mapping[str, str] | None = None,
              **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status,
                        headers=dict(headers) if headers else None)


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 429 or 500 of the shared fault injection, as fal's request errors look."""
    return fal_error(status, message, headers)


def problem(loc: list[Any], msg: str, kind: str, **ctx: Any) -> dict[str, Any]:
    """One entry of fal's ``detail`` list (pydantic's shape, fal's ``url``)."""
    entry: dict[str, Any] = {"loc": ["body", *loc], "msg": msg, "type": kind,
                             "url": f"{DOCS_ERRORS}#{kind}"}
    if ctx:
        entry["ctx"] = ctx
    return entry


# --- requests and the account -------------------------------------------------------------
@dataclass
class FalTask(Task):
    """A queued request that reached a model: what its status and result list back."""

    app: str = ""  # "fal-ai/bytedance": the follow-up URLs' app id
    endpoint: str = ""  # "fal-ai/bytedance/seedream/v4/edit"
    seed: int = 0
    sync_mode: bool = False
    cancel_requested: bool = False


@dataclass
class InvalidRequest:
    """A queued request whose input the model refused: it completes at once with a 422."""

    id: str
    app: str
    created: float
    detail: list[dict[str, Any]] = field(default_factory=list)


class FalState(ProviderState):
    """The emulated fal account: its key and the requests refused at validation."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.key = self.credentials[KEY_VAR]
        self.invalid: dict[str, InvalidRequest] = {}
        self.failure_answers = 0  # results answered with a failed model's own HTTP 500

    def new_id(self) -> str:
        return str(uuid.uuid4())  # fal's request ids are UUIDs


def account(state: EmulatorState) -> FalState:
    part = state.part(NAME)
    assert isinstance(part, FalState)
    return part


def make_state(context: ProviderContext) -> FalState:
    return FalState(context)


# --- auth ---------------------------------------------------------------------------------
def check_auth(request: Request, state: EmulatorState) -> Response | None:
    """``Authorization: Key <key id>:<key secret>``: 401 with fal's messages otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "key" or ":" not in key:
        state.stats.rejections["auth"] += 1
        return fal_error(401, "Invalid Key Authorization header format. Expected "
                              "'<key_id>:<key_secret>'.")
    if not hmac.compare_digest(key.encode(), account(state).key.encode()):
        state.stats.rejections["auth"] += 1
        return fal_error(401, "No user found for Key ID and Secret")
    return None


# --- input validation ---------------------------------------------------------------------
def _int_problem(name: str, prop: Mapping[str, Any], value: Any) -> dict[str, Any] | None:
    if isinstance(value, bool) or not (isinstance(value, int)
                                       or (isinstance(value, float) and value.is_integer())):
        return problem([name], "Input should be a valid integer", "int_type")
    if "minimum" in prop and value < prop["minimum"]:
        return problem([name], f"Input should be greater than or equal to {prop['minimum']}",
                       "greater_than_equal", ge=prop["minimum"])
    if "maximum" in prop and value > prop["maximum"]:
        return problem([name], f"Input should be less than or equal to {prop['maximum']}",
                       "less_than_equal", le=prop["maximum"])
    return None


def _image_size_problems(prop: Mapping[str, Any], value: Any) -> list[dict[str, Any]]:
    enum, obj = prop["oneOf"][0]["enum"], prop["oneOf"][1]
    if isinstance(value, str):
        if value not in enum:
            listed = ", ".join(f"'{e}'" for e in enum)
            return [problem(["image_size"], f"Input should be {listed}", "enum")]
        return []
    if not isinstance(value, Mapping):
        return [problem(["image_size"], "Input should be a valid dictionary or an image size "
                        "name", "union_type")]
    found = []
    for side in ("width", "height"):
        if side not in value:
            found.append(problem(["image_size", side], "Field required", "missing"))
            continue
        bad = _int_problem(side, obj["properties"][side], value[side])
        if bad is not None:
            bad["loc"] = ["body", "image_size", side]
            found.append(bad)
    found += [problem(["image_size", k], "Extra inputs are not permitted", "extra_forbidden")
              for k in value if k not in ("width", "height")]
    return found


def _image_url_problem(i: int, value: Any) -> tuple[dict[str, Any] | None, str]:
    """(problem, identity) of one ``image_urls`` entry: a URL is taken as it is (the model
    would download it), a data URI must hold base64 image data."""
    if not isinstance(value, str):
        return problem(["image_urls", i], "Input should be a valid string", "string_type"), ""
    if value.startswith(("http://", "https://")):
        return None, value
    if value.startswith("data:"):
        head, _, payload = value.partition(",")
        try:
            data = base64.b64decode(payload, validate=True) if head.endswith(";base64") \
                else b""
        except (binascii.Error, ValueError):
            data = b""
        if not data or not head[5:].startswith("image/"):
            return problem(["image_urls", i], "Failed to load the image. Please ensure the "
                           "image file is not corrupted and is in a supported format.",
                           "image_load_error"), ""
        return None, "sha256:" + hashlib.sha256(data).hexdigest()
    return problem(["image_urls", i], "Failed to download the file. Please check if the URL "
                   "is accessible.", "file_download_error"), ""


def validate_input(spec: ModelSpec, mode: str, body: Any
                   ) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """An endpoint's input as its runner checks it: (params with defaults, identities of the
    image_urls used, problems in fal's ``detail`` shape)."""
    if not isinstance(body, Mapping):
        return {}, [], [problem([], "Input should be a valid dictionary or object to extract "
                                "fields from", "model_attributes_type")]
    props: dict[str, Any] = spec.schema["properties"]
    found: list[dict[str, Any]] = []
    prompt = body.get("prompt")
    if "prompt" not in body:
        found.append(problem(["prompt"], "Field required", "missing"))
    elif not isinstance(prompt, str):
        found.append(problem(["prompt"], "Input should be a valid string", "string_type"))
    params: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("prompt", "image_urls"):
            continue
        prop = props.get(name)
        if prop is None:
            found.append(problem([name], "Extra inputs are not permitted", "extra_forbidden"))
        elif name == "image_size":
            found += _image_size_problems(prop, value)
        elif name == "seed" and value is None:
            continue
        elif prop.get("type") == "integer":
            bad = _int_problem(name, prop, value)
            found += [bad] if bad else []
        elif prop.get("type") == "boolean":  # sync_mode: fal takes true as well
            if not isinstance(value, bool):
                found.append(problem([name], "Input should be a valid boolean", "bool_type"))
        elif "enum" in prop and value not in prop["enum"]:
            listed = " or ".join(f"'{e}'" for e in prop["enum"])
            found.append(problem([name], f"Input should be {listed}", "enum"))
        if name in props and value is not None:
            params[name] = int(value) if prop and prop.get("type") == "integer" \
                and isinstance(value, float) else value
    identities: list[str] = []
    if mode == "edit":
        urls = body.get("image_urls")
        if "image_urls" not in body:
            found.append(problem(["image_urls"], "Field required", "missing"))
        elif not isinstance(urls, list):
            found.append(problem(["image_urls"], "Input should be a valid list", "list_type"))
        elif not urls:
            found.append(problem(["image_urls"], "List should have at least 1 item after "
                                 "validation, not 0", "too_short"))
        else:
            used = urls[-MAX_IMAGE_URLS:]  # fal: only the last 10 are used
            offset = len(urls) - len(used)
            for i, value in enumerate(used):
                bad, identity = _image_url_problem(offset + i, value)
                found += [bad] if bad else []
                identities.append(identity)
    elif "image_urls" in body:
        found.append(problem(["image_urls"], "Extra inputs are not permitted",
                             "extra_forbidden"))
    final = spec.with_defaults(params)
    if not found and identities and len(identities) + final["max_images"] > \
            MAX_REFS_PLUS_OUTPUTS:
        found.append(problem(["max_images"], f"The total number of images (image inputs + "
                             f"image outputs) must not exceed {MAX_REFS_PLUS_OUTPUTS}",
                             "value_error"))
    return final, identities, found


def output_size(spec: ModelSpec, image_size: Any) -> tuple[int, int]:
    """The size the model makes: the one asked for (or the preset's), scaled into the
    model's pixel range as fal does ("the image size will be adjusted by scaling")."""
    if isinstance(image_size, Mapping):
        w, h = int(image_size["width"]), int(image_size["height"])
    else:
        w, h = PRESETS.get(str(image_size), (2048, 2048))
    lim = spec.limits["image_size"]
    scale = 1.0
    if w * h < lim["min_pixels"]:
        scale = math.sqrt(lim["min_pixels"] / (w * h))
    elif w * h > lim["max_pixels"]:
        scale = math.sqrt(lim["max_pixels"] / (w * h))
    return max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))


# --- views --------------------------------------------------------------------------------
def queue_state(task: FalTask, now: float) -> str:
    if task.terminal:
        return "COMPLETED"
    if task.duration <= 0 or now < task.created + task.duration * QUEUE_SHARE:
        return "IN_QUEUE"
    return "IN_PROGRESS"


def urls(base: str, app: str, request_id: str) -> dict[str, str]:
    response = f"{base}{PATH}/{app}/requests/{request_id}"
    return {"response_url": response, "status_url": f"{response}/status",
            "cancel_url": f"{response}/cancel"}


def queue_position(state: EmulatorState, task: FalTask, now: float) -> int:
    """Requests of the account queued ahead of this one (in the order they came)."""
    ahead = 0
    for other in state.active_tasks(NAME):  # in creation order
        if other is task:
            break
        if isinstance(other, FalTask) and queue_state(other, now) == "IN_QUEUE":
            ahead += 1
    return ahead


def _logs(task: FalTask, now: float) -> list[dict[str, Any]]:
    def at(when: float) -> str:
        return datetime.fromtimestamp(when, UTC).isoformat()

    entries = [{"message": "Request queued", "level": "INFO", "source": "user",
                "timestamp": at(task.created)}]
    started = task.created + task.duration * QUEUE_SHARE
    if now >= started and task.outcome != "cancelled":
        entries.append({"message": f"Generating {task.images} image(s)", "level": "INFO",
                        "source": "user", "timestamp": at(started)})
    return entries


def status_json(state: EmulatorState, task: FalTask, base: str,
                with_logs: bool) -> tuple[int, dict[str, Any]]:
    now = state.now()
    word = queue_state(task, now)
    doc: dict[str, Any] = {"status": word, "request_id": task.id,
                           **urls(base, task.app, task.id)}
    if word == "IN_QUEUE":
        doc["queue_position"] = queue_position(state, task, now)
    doc["logs"] = _logs(task, now) if with_logs else None
    if word != "COMPLETED":
        return 202, doc
    started = task.created + task.duration * QUEUE_SHARE
    doc["metrics"] = {"inference_time": round(max(0.0, (task.finished or now) - started), 3)}
    if task.outcome == "cancelled":
        doc.update(error=CANCELLED_TEXT, error_type="client_cancelled")
    elif task.outcome == "failed":
        doc.update(error=FAILED_TEXT, error_type="downstream_service_error")
    return 200, doc


def invalid_status(req: InvalidRequest, base: str, with_logs: bool) -> dict[str, Any]:
    return {"status": "COMPLETED", "request_id": req.id, **urls(base, req.app, req.id),
            "logs": [] if with_logs else None, "metrics": {},
            "error": "Unprocessable Entity", "error_type": "validation_error"}


def _data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


async def result_json(task: FalTask, base: str) -> dict[str, Any]:
    images = []
    for out in task.outputs:
        data = await out.file.read()  # sizes are listed: the bytes must exist
        url = _data_uri(data, out.file.content_type) if task.sync_mode \
            else f"{base}/files/{out.file.path}"
        images.append({"url": url, "content_type": out.file.content_type,
                       "file_name": out.name, "file_size": len(data),
                       "width": task.width, "height": task.height})
    return {"images": images, "seed": task.seed}


# --- endpoints ----------------------------------------------------------------------------
def _model(endpoint: str) -> tuple[ModelSpec, str] | None:
    base, _, mode = endpoint.rpartition("/")
    spec = by_endpoint(NAME, base)
    return (spec, mode) if spec is not None and mode in ENDPOINTS else None


async def submit(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    endpoint = request.path_params["endpoint"].strip("/")
    found = _model(endpoint)
    if found is None:
        state.stats.rejections["not_found"] += 1
        return fal_error(404, f"Application '{endpoint}' not found")
    spec, mode = found
    app = "/".join(endpoint.split("/")[:2])
    try:
        body = await request.json()
    except ValueError:
        body = None
        problems = [problem([], "JSON decode error", "json_invalid")]
    else:
        params, identities, problems = validate_input(spec, mode, body)
    base = base_url(request)
    fal = account(state)
    if problems:
        # the queue takes the request; its runner refuses the input at once
        state.stats.rejections["validation"] += 1
        req = InvalidRequest(fal.new_id(), app, state.now(), problems)
        fal.invalid[req.id] = req
        return JSONResponse({"request_id": req.id, **urls(base, app, req.id),
                             "queue_position": 0})
    assert isinstance(body, Mapping)
    width, height = output_size(spec, params["image_size"])
    images = params["num_images"] * params["max_images"]
    task = state.new_task(
        NAME, model=spec.endpoint, prompt=body["prompt"], params=params,
        inputs=tuple(i if i.startswith("sha256:") else state.identity(i) for i in identities),
        images=images, width=width, height=height, cls=FalTask, app=app, endpoint=endpoint,
        seed=int(params["seed"]) if params.get("seed") is not None else 0,
        sync_mode=bool(params.get("sync_mode")))
    assert isinstance(task, FalTask)
    if params.get("seed") is None:
        task.seed = int(task.id.replace("-", "")[:8], 16) % (1 << 31)
    return JSONResponse({"request_id": task.id, **urls(base, app, task.id),
                         "queue_position": queue_position(state, task, state.now())})


def _find(request: Request, state: EmulatorState) -> FalTask | InvalidRequest | None:
    app = f"{request.path_params['owner']}/{request.path_params['app']}"
    rid = request.path_params["request_id"]
    task = state.tasks.get((NAME, rid))
    if isinstance(task, FalTask) and task.app == app:
        return task
    req = account(state).invalid.get(rid)
    return req if req is not None and req.app == app else None


def _not_found(state: EmulatorState) -> Response:
    state.stats.rejections["not_found"] += 1
    return fal_error(404, "Request not found")


async def status(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    found = _find(request, state)
    base = base_url(request)
    with_logs = request.query_params.get("logs", "").lower() in ("1", "true")
    if found is None:
        return _not_found(state)
    if isinstance(found, InvalidRequest):
        return JSONResponse(invalid_status(found, base, with_logs))
    state.count_poll(found)
    code, doc = status_json(state, found, base, with_logs)
    return JSONResponse(doc, status_code=code)


async def result(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    found = _find(request, state)
    if found is None:
        return _not_found(state)
    if isinstance(found, InvalidRequest):
        return fal_error(422, found.detail)
    if not found.terminal:
        return fal_error(400, "Request is still in progress")
    if found.outcome == "cancelled":
        return fal_error(499, CANCELLED_TEXT, {"X-Fal-Error-Type": "client_cancelled"},
                         error_type="client_cancelled")
    if found.outcome == "failed":
        account(state).failure_answers += 1
        return fal_error(500, [problem([], FAILED_TEXT, "downstream_service_error")],
                         {"X-Fal-Retryable": "false"})
    return JSONResponse(await result_json(found, base_url(request)))


async def cancel(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    found = _find(request, state)
    if found is None:
        state.stats.rejections["not_found"] += 1
        return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
    if isinstance(found, InvalidRequest) or found.terminal:
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
    if queue_state(found, state.now()) == "IN_QUEUE":
        state.cancel(found)  # removed from the queue: never runs, never billed
    else:
        found.cancel_requested = True  # Seedream runs on: the signal changes nothing
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


async def not_found(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    return _not_found(state)


def routes(kit: Any) -> list[Route]:
    """fal's queue routes; ``kit`` wraps handlers with the emulator's faults and counters."""
    P, R = PATH, f"{PATH}/{{owner}}/{{app}}/requests/{{request_id}}"
    return [
        Route(f"{R}/status", kit.api(status, f"GET {P}/<app>/requests/<id>/status"),
              methods=["GET"]),
        Route(f"{R}/cancel", kit.api(cancel, f"PUT {P}/<app>/requests/<id>/cancel"),
              methods=["PUT"]),
        Route(R, kit.api(result, f"GET {P}/<app>/requests/<id>"), methods=["GET"]),
        Route(f"{P}/{{endpoint:path}}", kit.api(submit, f"POST {P}/<endpoint id>"),
              methods=["POST"]),
        Route(f"{P}/{{rest:path}}", kit.api(not_found, f"* {P}/(unknown)"),
              methods=kit.ALL_METHODS),
    ]
