"""The emulated Wiro API (``/wiro/v1``): Run, Task/Detail, Task/Cancel, Task/Kill, File/Upload,
the websocket (``/wiro/socket/v1``), and the Wiro account behind it (:class:`WiroState`:
balance, task ids, socket tokens, nonces), its task lifecycle and its error envelopes.

Wire facts follow the vendor pages (shapes, field names, every number as a string) and
Wiro's documentation repository (error codes and messages, task lifecycle, billing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from runner.catalog import ModelSpec, by_endpoint
from runner.emulator.faults import SocketFault
from runner.emulator.http import (
    BodyError,
    Fields,
    FilePart,
    base_url,
    last_values,
    read_fields,
    safe_name,
)
from runner.emulator.state import (
    EmulatorState,
    ProviderContext,
    ProviderState,
    Task,
    token,
)

NAME = "wiro"
KEY_VAR, SECRET_VAR = "WIRO_API_KEY", "WIRO_API_SECRET"

# Wiro's task lifecycle, in order (Wiro-Docs, tasks.md). The last one is terminal.
STAGES: tuple[str, ...] = (
    "task_queue", "task_accept", "task_preprocess_start", "task_preprocess_end",
    "task_assign", "task_start", "task_output", "task_output_full", "task_end",
    "task_postprocess_start",
)
# A failing model writes to stderr: Task/Detail shows the accumulated stderr stage,
# task_error_full, where a good run shows task_output_full, and the task still ends in
# task_postprocess_end, with a non-zero pexit. Never the bare "task_error" status: in a
# Task/Detail answer that is the terminal pre-execution failure below (PROVIDERS.md, "task_error
# means two different things"); as a live websocket event it is stderr, which is not emulated.
FAILING_STAGES: tuple[str, ...] = tuple(
    {"task_output_full": "task_error_full"}.get(s, s) for s in STAGES
)
DONE = "task_postprocess_end"
CANCELLED = "task_cancel"
# A task that fails before its model runs (the ``task_error`` fault, or the prompt marker
# ``emulator:task_error``) ends with this status in Task/Detail when it would have been given
# a worker: it passes task_queue … task_preprocess_end, then stops for good.
TASK_ERROR = "task_error"
TASK_ERROR_AT = STAGES.index("task_assign")
TASK_ERROR_TEXT = ("Task could not be started: the output folder for the task could not "
                   "be created (emulated pre-execution failure, status task_error)")
# Task/Cancel only takes tasks not yet assigned to a worker; later ones need Task/Kill.
CANCELLABLE = frozenset(STAGES[: STAGES.index("task_assign")])

MAX_FILE_BYTES = 100 * 1024 * 1024  # File/Upload: 100 MB per file
RUN_FIELDS = ("prompt", "inputImage", "callbackUrl")  # besides the model's own parameters

# Made-up but stable ids for the fields Wiro fills from its own catalogue.
MODEL_IDS = {
    "bytedance/seedream-v4-5": "1203",
    "bytedance/seedream-v4": "1127",
    "bytedance/text-to-image-seedream-v3": "1034",
}
CATEGORIES = json.dumps(["tool", "partner", "ByteDance", "image-to-image", "text-to-image"],
                        separators=(",", ":"))


# --- envelopes ----------------------------------------------------------------------------
def wiro_error(code: int, message: str, status: int = 200,
               headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"result": False, "errors": [{"code": code, "message": message}]},
                        status_code=status, headers=dict(headers) if headers else None)


def wiro_errors(problems: list[tuple[int, str]]) -> JSONResponse:
    return JSONResponse({"result": False,
                         "errors": [{"code": c, "message": m} for c, m in problems]})


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 429 or 500 of the shared fault injection, in Wiro's envelope (code 0)."""
    return wiro_error(0, message, status=status, headers=headers)


# --- tasks and the account ----------------------------------------------------------------
@dataclass
class WiroTask(Task):
    """A Wiro task: what Task/Detail lists back besides the shared fields."""

    token: str = field(default_factory=lambda: token(30))  # socketaccesstoken
    parameters: dict[str, Any] = field(default_factory=dict)  # as Task/Detail lists them
    callback_url: str = ""
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


def stages(task: Task) -> tuple[str, ...]:
    return FAILING_STAGES if task.fails else STAGES


def stage_time(task: Task, index: int) -> float:
    """When stage ``index`` of :func:`stages` begins."""
    return task.created + task.duration * index / len(STAGES)


def status_of(task: Task, now: float) -> str:
    """The task's Wiro status at ``now``."""
    if task.outcome == "cancelled":
        return CANCELLED
    if task.outcome is not None:
        return TASK_ERROR if task.task_error else DONE
    if task.duration <= 0:
        return stages(task)[-1]
    index = int((now - task.created) / task.duration * len(STAGES))
    return stages(task)[max(0, min(index, len(STAGES) - 1))]


class WiroState(ProviderState):
    """The emulated Wiro account: its balance (USD), task ids, socket tokens, used nonces."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.balance = float(self.options["balance_usd"])
        if self.balance < 0:
            raise ValueError(f"{NAME}.balance_usd must be ≥ 0, not {self.balance}")
        self.key = self.credentials[KEY_VAR]
        self.secret = self.credentials[SECRET_VAR]
        self.next_id = 100001
        self.tokens: dict[str, WiroTask] = {}
        self.nonces: set[tuple[str, str]] = set()

    def new_id(self) -> str:
        task_id = str(self.next_id)
        self.next_id += 1
        return task_id

    def ends_at(self, task: Task) -> float:
        if task.task_error:  # stops when it would have been assigned a worker
            return stage_time(task, TASK_ERROR_AT)
        return super().ends_at(task)

    def price_usd(self, model: str, images: int) -> float:
        """List price (BytePlus's, ``ModelSpec.price``) of ``images`` images of ``model``."""
        return self.list_price(model, images)[0]

    def bill(self, task: Task) -> None:
        task.cost_usd = self.price_usd(task.model, task.images)
        self.balance -= task.cost_usd

    def balances(self) -> dict[str, Any]:
        return {"wiro_usd": round(self.balance, 12)}


def account(state: EmulatorState) -> WiroState:
    part = state.part(NAME)
    assert isinstance(part, WiroState)
    return part


def make_state(context: ProviderContext) -> WiroState:
    return WiroState(context)


# --- auth ---------------------------------------------------------------------------------
def check_auth(request: Request, state: EmulatorState) -> Response | None:
    """Signature authentication, as a project configured for it answers.

    Wiro-Docs (error-reference.md) answers HTTP 401 with error code 0 for API-key and
    signature failures and reserves 98/99 for sign-in and bearer tokens; PROVIDERS.md lists
    98 "sign-in required" and 99 "bad token" generally. We follow the vendor's table: 401,
    code 0 and its exact messages, so a client must key on the HTTP status for auth.
    A reused nonce is refused like a bad signature (replay protection, per the docs).
    """
    wiro = account(state)
    key = request.headers.get("x-api-key", "")
    nonce = request.headers.get("x-nonce", "")
    signature = request.headers.get("x-signature", "")
    if not key or not hmac.compare_digest(key.encode(), wiro.key.encode()):
        state.stats.rejections["auth"] += 1
        return wiro_error(0, "Project authorization is not founded.", status=401)
    if not nonce or not signature:
        state.stats.rejections["auth"] += 1
        return wiro_error(0, "Project requires signature authentication. x-signature and "
                             "x-nonce headers are required.", status=401)
    expected = hmac.new(wiro.key.encode(), (wiro.secret + nonce).encode(),
                        hashlib.sha256).hexdigest()
    # The vendor pages pipe `openssl dgst` straight into the header, which prints
    # "SHA2-256(stdin)= <hex>" (OpenSSL 3) or "(stdin)= <hex>": take the last word.
    given = (signature.split() or [""])[-1].lower()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        state.stats.rejections["auth"] += 1
        return wiro_error(0, "Project authorization is not valid.", status=401)
    if (key, nonce) in wiro.nonces:
        state.stats.rejections["auth"] += 1
        state.stats.rejections["nonce_reused"] += 1
        return wiro_error(0, "Project authorization is not valid. (x-nonce was already used: "
                             "send a fresh nonce with every request)", status=401)
    wiro.nonces.add((key, nonce))
    return None


# --- parameters ---------------------------------------------------------------------------
_INT = re.compile(r"[+-]?\d+")


def _convert(name: str, prop: dict[str, Any], raw: Any) -> tuple[Any, str | None]:
    """A wire value (string, or JSON scalar) → the schema's type, or a problem."""
    kind = prop.get("type")
    if isinstance(raw, FilePart):
        return None, f"Request parameter [{name}] must be text, not a file"
    if kind == "integer":
        if isinstance(raw, bool):
            return None, f"Request parameter [{name}] must be integer or float"
        if isinstance(raw, int):
            return raw, None
        if isinstance(raw, float) and raw.is_integer():
            return int(raw), None
        if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
            return int(raw.strip()), None
        if _as_float(raw) is not None:
            return None, f"Request parameter [{name}] must be an integer"
        return None, f"Request parameter [{name}] must be integer or float"
    if kind == "number":
        value = None if isinstance(raw, bool) else _as_float(raw)
        if value is None:
            return None, f"Request parameter [{name}] must be integer or float"
        return value, None
    if kind == "boolean":
        # a select with options "true"/"false" on the vendor pages: strings only
        if raw in ("true", "false"):
            return raw == "true", None
        return None, f'Request parameter [{name}] must be "true" or "false"'
    if not isinstance(raw, str):
        return None, f"Request parameter [{name}] must be a string"
    return raw, None


def _as_float(raw: Any) -> float | None:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _schema_problem(err: Any, props: dict[str, Any]) -> str:
    name = ".".join(str(p) for p in err.absolute_path) or "?"
    prop = props.get(name, {})
    if err.validator in ("minimum", "maximum"):
        return (f"Request parameter [{name}] must be between {prop.get('minimum')} and "
                f"{prop.get('maximum')}")
    if err.validator == "enum":
        return f"Request parameter [{name}] must be one of: {', '.join(map(str, prop['enum']))}"
    if err.validator == "pattern":
        return f"Request parameter [{name}] must look like WIDTHxHEIGHT, e.g. 2048x2048"
    return f"Request parameter [{name}] {err.message}"


def _dimensions(params: dict[str, Any]) -> tuple[int, int]:
    if "width" in params:
        return int(params["width"]), int(params["height"])
    w, _, h = str(params.get("size", "1024x1024")).partition("x")
    return int(w), int(h)


# What the schema found wrong with the parameters asked before, by model and parameters:
# a batch asks the same ones again and again. (The model is kept with its answer, so a
# model made anew under the same name is checked anew.)
_SCHEMA_PROBLEMS: dict[tuple[str, str], tuple[ModelSpec, tuple[str, ...]]] = {}


def schema_problems(spec: ModelSpec, params: dict[str, Any]) -> tuple[str, ...]:
    """The model's schema's problems with ``params``, in the order of their paths."""
    try:
        key: tuple[str, str] | None = (spec.endpoint, json.dumps(params, sort_keys=True))
    except (TypeError, ValueError):
        key = None
    if key is not None and (known := _SCHEMA_PROBLEMS.get(key)) is not None \
            and known[0] is spec:
        return known[1]
    props: dict[str, Any] = spec.schema["properties"]
    problems = tuple(_schema_problem(e, props) for e in
                     sorted(spec.validator.iter_errors(params), key=lambda e: list(e.path)))
    if key is not None:
        if len(_SCHEMA_PROBLEMS) >= 1024:
            _SCHEMA_PROBLEMS.clear()
        _SCHEMA_PROBLEMS[key] = (spec, problems)
    return problems


def validate_run(spec: ModelSpec, fields: Fields) -> tuple[dict[str, Any], list[str]]:
    """Check a Run request against the model's documented parameters.

    Returns what the task needs (prompt, typed params with defaults, input images, wire
    parameters, callback) and every problem found."""
    props: dict[str, Any] = spec.schema["properties"]
    problems: list[str] = []
    images: list[str | FilePart] = []
    raw: dict[str, Any] = {}
    prompt: Any = None
    callback = ""
    unknown: list[str] = []
    for name, value in fields:
        if name == "inputImage":
            if isinstance(value, str):
                # Wiro's own default lists several images in one comma-separated string
                images.extend(v.strip() for v in value.split(",") if v.strip())
            elif isinstance(value, FilePart):
                images.append(value)
            elif value is not None:
                problems.append("Request parameter [inputImage] must be files or URL strings")
        elif name == "prompt":
            prompt = value
        elif name == "callbackUrl":
            callback = value if isinstance(value, str) else ""
        elif name in props:
            raw[name] = value
        elif name not in unknown:
            unknown.append(name)
    # Emulator strictness: the real API may ignore unknown fields; refusing them makes a
    # misspelt parameter visible instead of silently using its default.
    accepted = ", ".join([*RUN_FIELDS[:1], *(["inputImage"] if spec.max_input_images else []),
                          *props, "callbackUrl"])
    problems.extend(f"Request parameter [{name}] is not supported by {spec.endpoint} "
                    f"(it takes: {accepted})" for name in unknown)
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("Request parameter [prompt] required")
    typed: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        converted, problem = _convert(name, props[name], value)
        if problem:
            problems.append(problem)
        else:
            typed[name] = converted
    params = spec.with_defaults(typed)
    if not problems:
        problems.extend(schema_problems(spec, params))
    limits = spec.limits
    n = len(images)
    if n > spec.max_input_images:
        if spec.max_input_images == 0:
            problems.append(f"Request parameter [inputImage] is not accepted: {spec.endpoint} "
                            f"is text-to-image only ({n} given)")
        else:
            problems.append(f"Request parameter [inputImage] takes at most "
                            f"{spec.max_input_images} images ({n} given)")
    if not problems and "max_total_images" in limits and spec.outputs_param:
        outputs = params[spec.outputs_param]
        if n + outputs > limits["max_total_images"]:
            problems.append(f"Number of input images ({n}) + {spec.outputs_param} ({outputs}) "
                            f"must be smaller than or equal to {limits['max_total_images']}")
    if not problems and "min_pixels" in limits:
        w, h = params["width"], params["height"]
        if not limits["min_pixels"] <= w * h <= limits["max_pixels"]:
            problems.append(f"Request parameters [width] × [height] = {w}×{h} = {w * h:,} "
                            f"pixels; must be between {limits['min_pixels']:,} and "
                            f"{limits['max_pixels']:,}")
        if not 1 / limits["max_aspect"] <= w / h <= limits["max_aspect"]:
            problems.append(f"Request parameters [width]/[height] aspect ratio {w}/{h} must be "
                            f"between 1/{limits['max_aspect']} and {limits['max_aspect']}")
    wire = {name: (v if isinstance(v, str) else json.dumps(v)) for name, v in raw.items()
            if v is not None and not isinstance(v, FilePart)}
    return {"prompt": prompt, "params": params, "images": images, "wire": wire,
            "callback": callback}, problems


# --- views --------------------------------------------------------------------------------
def _t(value: float | None) -> str:
    return "0" if value is None else str(int(value))


def task_json(task: WiroTask, now: float, base: str) -> dict[str, Any]:
    """A tasklist entry, every field of the vendor pages present, numbers as strings.

    A task that stopped before its model ran (``task_error``) shows the stages it passed,
    no start, end or post-processing time, an empty ``pexit`` (no process ran: the shape
    of the ``task_error`` example in Wiro's official client's tests), its ``debugerror``,
    no outputs and a zero cost."""
    status = status_of(task, now)
    stop = task.finished if task.finished is not None else None
    errored = task.task_error and task.terminal
    horizon = stop if (task.outcome == "cancelled" or errored) and stop is not None else now

    def stage(name: str) -> str:
        when = stage_time(task, STAGES.index(name))
        # a task_error task stops at the moment it would have been assigned: never assigned
        reached = when < horizon if errored else when <= horizon
        return _t(when) if reached else "0"

    end = task.finished if task.outcome in ("succeeded", "failed") and not task.task_error \
        else None
    elapsed = (stop if stop is not None else now) - task.created
    outputs = []
    total_size = 0
    for out in task.outputs if task.outcome == "succeeded" else []:
        size = len(out.file.data or b"")
        total_size += size
        outputs.append({
            "id": out.id,
            "name": out.name,
            "contenttype": out.file.content_type,
            "parentid": task.folder,
            "uuid": task.uuid,
            "size": str(size),
            "addedtime": _t(end),
            "modifiedtime": _t(end),
            "accesskey": out.accesskey,
            "foldercount": "0",
            "filecount": "0",
            "ispublic": 0,
            "expiretime": None,
            "url": f"{base}/files/{out.file.path}",
        })
    billed = task.outcome == "succeeded"
    failed = task.outcome == "failed" and not task.task_error
    task_error = task.outcome == "failed" and task.task_error
    cost = f"{task.cost_usd:.12f}" if billed else "0"
    cps = f"{task.cost_usd / max(elapsed, 1e-9):.12f}" if billed else "0"
    if failed:
        debugerror = ("Traceback (most recent call last):\n  File \"predict.py\", line 88, in "
                      "predict\nRuntimeError: image generation failed")
    elif task_error:
        debugerror = TASK_ERROR_TEXT
    else:
        debugerror = ""
    pexit = "1" if failed else "" if task_error else "0"
    return {
        "id": task.id,
        "uuid": task.uuid,
        "name": "",
        "socketaccesstoken": task.token,
        "parameters": task.parameters,
        "debugoutput": "",
        "debugerror": debugerror,
        "starttime": stage("task_start"),
        "endtime": stage("task_end"),
        "elapsedseconds": f"{max(0.0, elapsed):.4f}",
        "status": status,
        "cps": cps,
        "totalcost": cost,
        "guestid": None,
        "projectid": "1",
        "modelid": MODEL_IDS.get(task.model, "0"),
        "description": "",
        "basemodelid": "0",
        "runtype": "model",
        "modelfolderid": "",
        "modelfileid": "",
        "callbackurl": task.callback_url,
        "marketplaceid": None,
        "createtime": _t(task.created),
        "canceltime": _t(task.finished) if task.outcome == "cancelled" else "0",
        "assigntime": stage("task_assign"),
        "accepttime": stage("task_accept"),
        "preprocessstarttime": stage("task_preprocess_start"),
        "preprocessendtime": stage("task_preprocess_end"),
        "postprocessstarttime": stage("task_postprocess_start"),
        "postprocessendtime": _t(end),
        "pexit": pexit,
        "categories": CATEGORIES,
        "outputs": outputs,
        "size": str(total_size),
    }


# --- endpoints ----------------------------------------------------------------------------
async def _fields(request: Request) -> Fields | Response:
    try:
        return await read_fields(request, max_file_bytes=MAX_FILE_BYTES)
    except BodyError as exc:
        return wiro_error(0, str(exc))


async def run(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    endpoint = f"{request.path_params['owner']}/{request.path_params['slug']}"
    spec = by_endpoint(NAME, endpoint)
    if spec is None:
        state.stats.rejections["not_found"] += 1
        return wiro_error(1, "slug-owner-project-not-exist")
    fields = await _fields(request)
    if isinstance(fields, Response):
        state.stats.rejections["validation"] += 1
        return fields
    req, problems = validate_run(spec, fields)
    if problems:
        state.stats.rejections["validation"] += 1
        return wiro_errors([(0, p) for p in problems])
    params = req["params"]
    images = params.get(spec.outputs_param, 1) if spec.outputs_param else 1
    wiro = account(state)
    price = wiro.price_usd(endpoint, images)
    # what the tasks still running will cost if they succeed: their list prices
    if wiro.balance - state.reserved(NAME) < price:
        state.stats.rejections["balance"] += 1
        return wiro_error(97, "Insufficient balance")
    limit = state.config.concurrency
    if state.active_count(NAME) >= limit:
        state.stats.rejections["concurrency"] += 1
        state.stats.concurrency_refusals[NAME] += 1
        return wiro_error(96, f"You have reached your concurrent task limit. With your current "
                              f"balance of ${wiro.balance:.2f}, you can run up to {limit} "
                              f"tasks at the same time. Add funds to increase your limit.")
    base = base_url(request)
    folder = uuid.uuid4().hex
    refs: list[str] = []
    inputs: list[str] = []
    for i, image in enumerate(req["images"]):
        if isinstance(image, FilePart):
            name = safe_name(image.filename, f"inputImage-{i}.png")
            stored = state.store(f"wiro/inputs/{folder}/{i}-{name}", image.data,
                                 image.content_type or "application/octet-stream")
            refs.append(f"{base}/files/{stored.path}")
            inputs.append(f"sha256:{stored.sha256}")
        else:
            refs.append(image)
            inputs.append(state.identity(image))
    parameters: dict[str, Any] = {"prompt": req["prompt"], **req["wire"]}
    if refs:
        parameters["inputImage"] = ",".join(refs)
    width, height = _dimensions(params)
    task = state.new_task(
        NAME, model=endpoint, prompt=req["prompt"], params=params, inputs=tuple(inputs),
        images=images, width=width, height=height, cls=WiroTask, parameters=parameters,
        callback_url=req["callback"], reserve=price,
    )
    assert isinstance(task, WiroTask)
    wiro.tokens[task.token] = task
    return JSONResponse({"errors": [], "taskid": task.id, "socketaccesstoken": task.token,
                         "result": True})


def _find(state: EmulatorState, values: dict[str, Any]) -> WiroTask | Response:
    taskid = values.get("taskid")
    tok = values.get("tasktoken") or values.get("socketaccesstoken")
    taskid = str(taskid) if isinstance(taskid, (str, int)) and not isinstance(taskid, bool) \
        else ""
    tok = tok if isinstance(tok, str) else ""
    if not taskid and not tok:
        return wiro_error(0, "taskid or socketaccesstoken is required")
    task = state.tasks.get((NAME, taskid)) if taskid else account(state).tokens.get(tok)
    if not isinstance(task, WiroTask):
        state.stats.rejections["not_found"] += 1
        return wiro_error(1, "There is no task yet.")
    return task


async def _lookup(request: Request, state: EmulatorState) -> WiroTask | Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    fields = await _fields(request)
    if isinstance(fields, Response):
        return fields
    return _find(state, last_values(fields))


async def _render_outputs(task: Task) -> None:
    for out in task.outputs:
        await out.file.read()


async def detail(request: Request, state: EmulatorState) -> Response:
    task = await _lookup(request, state)
    if isinstance(task, Response):
        return task
    state.count_poll(task)
    await _render_outputs(task)  # sizes are listed: the bytes must exist
    return JSONResponse({"total": "1", "errors": [],
                         "tasklist": [task_json(task, state.now(), base_url(request))],
                         "result": True})


async def cancel(request: Request, state: EmulatorState) -> Response:
    task = await _lookup(request, state)
    if isinstance(task, Response):
        return task
    if task.terminal or status_of(task, state.now()) not in CANCELLABLE:
        return wiro_error(1, "Task is not in a cancellable state.")
    state.cancel(task)
    return JSONResponse({"errors": [], "tasklist": [task_json(task, state.now(),
                                                              base_url(request))],
                         "result": True})


async def kill(request: Request, state: EmulatorState) -> Response:
    task = await _lookup(request, state)
    if isinstance(task, Response):
        return task
    if task.terminal:
        return wiro_error(1, f"Task could not be killed: it has already ended "
                             f"({status_of(task, state.now())})")
    state.cancel(task)
    return JSONResponse({"errors": [], "tasklist": [task_json(task, state.now(),
                                                              base_url(request))],
                         "result": True})


async def upload(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    fields = await _fields(request)
    if isinstance(fields, Response):
        return fields
    values = last_values(fields)
    part = values.get("file")
    if not isinstance(part, FilePart):
        return wiro_error(0, "Request files [file] required")
    file_id = uuid.uuid4().hex
    name = safe_name(part.filename)
    parent = values.get("folderid") or values.get("folderId")
    stored = state.store(f"wiro/uploads/{file_id}/{name}", part.data,
                         part.content_type or "application/octet-stream")
    return JSONResponse({"result": True, "errors": [], "list": [{
        "id": file_id,
        "name": name,
        "contenttype": stored.content_type,
        "size": str(len(part.data)),
        "parentid": parent if isinstance(parent, str) and parent else uuid.uuid4().hex,
        "url": f"{base_url(request)}/files/{stored.path}",
        "addedtime": _t(state.now()),
        "accesskey": token(30),
    }]})


# --- the websocket ------------------------------------------------------------------------
# Wiro-Docs, websocket.md: subscribe with {"type": "task_info", "tasktoken"}; every frame is
# {"type", "id", "tasktoken", "message", "result"}, one per stage in lifecycle order;
# task_output frames carry a progressGenerate object while the model runs; a failing model
# writes stderr (an interim task_error frame); task_postprocess_end (message: the outputs)
# or task_cancel is the last. Nothing documents a replay: a task already ended when it is
# subscribed gets no frame at all, and neither does the end of a task that stopped before
# its model ran (task_error in Task/Detail): a client finds both by polling.
MODEL_RUN = (STAGES.index("task_start"), STAGES.index("task_end"))


def progress_message(task: Task, index: int) -> dict[str, str]:
    """The progressGenerate object at stage ``index`` of the model's run (all strings)."""
    start, end = MODEL_RUN
    pct = 100.0 * (index - start) / (end - start)
    step = round(pct / 5)
    run = task.duration * (end - start) / len(STAGES)
    elapsed = run * pct / 100
    return {"type": "progressGenerate", "task": "Generating", "percentage": f"{pct:.2f}",
            "stepCurrent": str(step), "stepTotal": "20",
            "speed": f"{step / max(elapsed, 1e-9):.2f}", "speedType": "it/s",
            "elapsedTime": f"{elapsed:.1f}", "remainingTime": f"{run - elapsed:.1f}"}


def socket_frames(task: WiroTask, index: int, base: str) -> list[dict[str, Any]]:
    """The frames a task sends on reaching stage ``index`` (``len(STAGES)``: its end)."""
    def frame(kind: str, message: Any = None) -> dict[str, Any]:
        return {"type": kind, "id": task.id, "tasktoken": task.token, "message": message,
                "result": True}

    if index >= len(STAGES):
        if task.outcome == "cancelled":
            return [frame(CANCELLED)]
        if task.task_error:
            return []
        outputs = task_json(task, task.finished or task.created, base)["outputs"]
        return [frame(DONE, [{k: o[k] for k in ("name", "contenttype", "size", "url")}
                             for o in outputs])]
    kind = stages(task)[index]
    frames: list[dict[str, Any]] = []
    if MODEL_RUN[0] < index <= MODEL_RUN[1]:
        frames.append(frame("task_output", progress_message(task, index)))
        if task.fails and kind == "task_output":
            frames.append(frame("task_error", "RuntimeError: image generation failed"))
    if kind == "task_output_full":
        frames.append(frame(kind, {"raw": "generated"}))
    elif kind == "task_error_full":
        frames.append(frame(kind, {"raw": "RuntimeError: image generation failed"}))
    elif kind != "task_output":
        frames.append(frame(kind))
    return frames


def _stage_index(task: WiroTask, now: float) -> int:
    """How far ``task`` is: a stage index, or ``len(STAGES)`` once it has ended."""
    if task.terminal:
        return len(STAGES)
    if task.duration <= 0:
        return len(STAGES) - 1
    return max(0, min(int((now - task.created) / task.duration * len(STAGES)),
                      len(STAGES) - 1))


class _Subscriptions:
    """One connection's tasks: what each was last sent, and when each changes next."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}  # token → the stage index last sent
        self.due: list[tuple[float, str]] = []  # (emulator time of its next stage, token)

    def schedule(self, task: WiroTask, index: int, ends_at: float) -> None:
        """Look at ``task`` again when it leaves stage ``index`` (or ends)."""
        if index >= len(STAGES):
            return
        last = TASK_ERROR_AT - 1 if task.task_error else len(STAGES) - 1
        when = stage_time(task, index + 1) if index < last else ends_at
        heapq.heappush(self.due, (when, task.token))


async def socket(websocket: WebSocket, state: EmulatorState,
                 fault: SocketFault | None) -> None:
    """Push each subscribed task's stages as the emulator's clock reaches them."""
    await websocket.accept()
    base = f"{'https' if websocket.url.scheme == 'wss' else 'http'}://{websocket.url.netloc}"
    wiro = account(state)
    subs = _Subscriptions()
    wake = asyncio.Event()
    state.listeners.add(wake)
    if fault == "socket_silent":
        state.stats.push["silent"] += 1

    async def read() -> None:
        while True:
            try:
                doc = json.loads(await websocket.receive_text())
            except ValueError:
                continue
            tok = doc.get("tasktoken") if isinstance(doc, dict) else None
            if not isinstance(doc, dict) or doc.get("type") != "task_info" \
                    or not isinstance(tok, str):
                continue
            state.stats.push["subscriptions"] += 1
            task = wiro.tokens.get(tok)
            if task is None or tok in subs.sent:
                continue
            state.settle()
            if task.terminal:
                continue  # no replay of what happened before
            subs.sent[tok] = -1
            heapq.heappush(subs.due, (state.now(), tok))
            wake.set()

    loop = asyncio.get_running_loop()
    reader = loop.create_task(read())
    reader.add_done_callback(lambda _: wake.set())
    try:
        while not reader.done():
            wake.clear()
            now = state.now()
            state.settle(now)
            out: list[dict[str, Any]] = []
            later: list[WiroTask] = []  # looked at again next round
            while subs.due and (subs.due[0][0] <= now or wiro.tokens[subs.due[0][1]].terminal):
                _, tok = heapq.heappop(subs.due)
                task = wiro.tokens[tok]
                index = _stage_index(task, now)
                if index <= subs.sent[tok]:
                    later.append(task)
                    continue
                first = subs.sent[tok] + 1 if subs.sent[tok] >= 0 else index
                for i in range(first, index + 1):
                    if task.task_error and TASK_ERROR_AT <= i < len(STAGES):
                        continue
                    out.extend(socket_frames(task, i, base))
                subs.sent[tok] = index
                subs.schedule(task, index, wiro.ends_at(task))
            for task in later:
                subs.schedule(task, subs.sent[task.token], wiro.ends_at(task))
            if out and fault != "socket_silent":
                for doc in out:
                    await websocket.send_text(json.dumps(doc))
                    state.stats.push["frames"] += 1
                    if fault == "socket_drop":
                        state.stats.push["dropped"] += 1
                        await websocket.close(code=1011)
                        return
            if wake.is_set():  # a subscription, a poke or the reader's end meanwhile
                continue
            wait = 0.25
            if subs.due and state.frozen_at is None:
                wait = min(wait, max(0.001, subs.due[0][0] - state.now()))
            # woken by the reader (a subscription, or its end), poke() or the timer
            timer = loop.call_later(wait, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        state.listeners.discard(wake)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await reader


async def not_found(request: Request, state: EmulatorState) -> Response:
    return wiro_error(0, "Error parsing url.", status=404)


PATH = "/wiro/v1"
SOCKET_PATH = "/wiro/socket/v1"


def routes(kit: Any) -> list[BaseRoute]:
    """Wiro's routes; ``kit`` wraps handlers with the emulator's faults and counters."""
    W = PATH
    return [
        Route(f"{W}/Run/{{owner}}/{{slug}}", kit.api(run), methods=["POST"]),
        Route(f"{W}/Task/Detail", kit.api(detail), methods=["POST"]),
        Route(f"{W}/Task/Cancel", kit.api(cancel), methods=["POST"]),
        Route(f"{W}/Task/Kill", kit.api(kill), methods=["POST"]),
        Route(f"{W}/File/Upload", kit.api(upload), methods=["POST"]),
        WebSocketRoute(SOCKET_PATH, kit.socket(socket)),
        Route(f"{W}/{{rest:path}}", kit.api(not_found, f"* {W}/(unknown)"),
              methods=kit.ALL_METHODS),
    ]
