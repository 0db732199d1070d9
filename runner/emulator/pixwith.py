"""The emulated Pixwith API (``/pixwith/api``), its presigned upload target, and the
Pixwith account behind them (:class:`PixwithState`: credits, pending uploads).

Validation follows the Seedream 4.5 vendor page's parameter table; the envelope is
``{"code": 1|0, "message", "data"}``. Pixwith documents no HTTP status codes, so every
answer, error or not, is HTTP 200 (faults aside).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.emulator.http import base_url, s3_error
from runner.emulator.state import EmulatorState, ProviderContext, ProviderState, Task
from runner.resources import load_schema

NAME = "pixwith"
KEY_VAR = "PIXWITH_API_KEY"
CREDITS_PER_IMAGE = 6  # Pixwith's documented price
MODEL_ID = "0-32"
# The options Pixwith documents for Seedream 4.5 (the same schema the client validates with)
OPTIONS = load_schema("models/pixwith-seedream-4.5.json")["properties"]
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
IMAGE_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}
# long side in pixels for each resolution (area ≈ side²)
RESOLUTION_SIDE = {"2K": 2048, "4K": 4096}


# --- envelopes ----------------------------------------------------------------------------
def pixwith_error(message: str, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> JSONResponse:
    # Pixwith documents no HTTP status codes: its errors are {"code": 0, ...} with HTTP 200.
    return JSONResponse({"code": 0, "message": message}, status_code=status,
                        headers=dict(headers) if headers else None)


def pixwith_ok(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 1, "message": "success", "data": data})


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 429 or 500 of the shared fault injection, in Pixwith's envelope."""
    return pixwith_error(message, status=status, headers=headers)


# --- the account --------------------------------------------------------------------------
class PixwithState(ProviderState):
    """The emulated Pixwith account: its credits and the presigned uploads not yet used."""

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.credits = int(self.options["credits"])
        if self.credits < 0:
            raise ValueError(f"{NAME}.credits must be ≥ 0, not {self.credits}")
        self.upload_ttl = float(self.options["upload_ttl"])
        if self.upload_ttl <= 0:
            raise ValueError(f"{NAME}.upload_ttl must be > 0 seconds, not {self.upload_ttl}")
        self.key = self.credentials[KEY_VAR]
        self.uploads: dict[str, dict[str, Any]] = {}  # presigned uploads by key
        self.upload_secret = secrets.token_bytes(32)  # signs the presigned uploads

    def bill(self, task: Task) -> None:
        # taken at completion
        task.credits = CREDITS_PER_IMAGE * task.images
        self.credits -= task.credits

    def balances(self) -> dict[str, Any]:
        return {"pixwith_credits": self.credits}


def account(state: EmulatorState) -> PixwithState:
    part = state.part(NAME)
    assert isinstance(part, PixwithState)
    return part


def make_state(context: ProviderContext) -> PixwithState:
    return PixwithState(context)


def status_code(task: Task) -> int:
    """``task/get``'s status: 1 running, 2 succeeded, 3 failed."""
    return {"succeeded": 2, "failed": 3}.get(task.outcome or "", 1)


# --- endpoints ----------------------------------------------------------------------------
def check_auth(request: Request, state: EmulatorState) -> Response | None:
    key = request.headers.get("api-key", "")
    if not key or not hmac.compare_digest(key.encode(), account(state).key.encode()):
        state.stats.rejections["auth"] += 1
        return pixwith_error("Invalid API KEY")
    return None


async def _json_body(request: Request) -> dict[str, Any] | Response:
    body = await request.body()
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        return pixwith_error("Invalid request body: send a JSON object")
    if not isinstance(doc, dict):
        return pixwith_error("Invalid request body: send a JSON object")
    return doc


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_create(doc: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The first problem with a task/create body, following the vendor page's table."""
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return {}, "prompt is required"
    if "model_id" not in doc:
        return {}, "model_id is required"
    if doc["model_id"] != MODEL_ID:
        return {}, f"Invalid model_id: {doc['model_id']!r} (Seedream 4.5 is {MODEL_ID!r})"
    urls: list[str] = []
    if "image_urls" in doc and doc["image_urls"] is not None:
        raw = doc["image_urls"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= 4:
            return {}, "image_urls must be an array of 1 to 4 image URLs"
        for url in raw:
            if not _is_url(url):
                return {}, "Invalid image url"
        urls = [u.strip() for u in raw]
    options = doc.get("options")
    if options is None:
        return {}, "options is required"
    if not isinstance(options, dict):
        return {}, "options must be an object"
    # Emulator strictness: unknown keys are refused rather than silently ignored.
    for key in doc:
        if key not in ("prompt", "model_id", "image_urls", "options"):
            return {}, f"Unknown parameter {key!r}"
    for key in options:
        if key not in OPTIONS:
            return {}, f"Unknown option {key!r}; options are: {', '.join(OPTIONS)}"
    if "prompt_optimization" not in options:
        return {}, "options.prompt_optimization is required"
    if not isinstance(options["prompt_optimization"], bool):
        return {}, "options.prompt_optimization must be a boolean"
    num = options.get("num_outputs", 1)
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 4:
        return {}, "options.num_outputs must be an integer from 1 to 4"
    # The table marks resolution and aspect_ratio "Yes" yet gives defaults: we apply them.
    resolution = options.get("resolution", "2K")
    if resolution not in OPTIONS["resolution"]["enum"]:
        return {}, f"options.resolution must be one of: {', '.join(OPTIONS['resolution']['enum'])}"
    ratio = options.get("aspect_ratio", "1:1")
    if ratio not in OPTIONS["aspect_ratio"]["enum"]:
        return {}, ("options.aspect_ratio must be one of: "
                    f"{', '.join(OPTIONS['aspect_ratio']['enum'])}")
    params = {"prompt_optimization": options["prompt_optimization"], "num_outputs": num,
              "resolution": resolution, "aspect_ratio": ratio}
    return {"prompt": prompt, "params": params, "image_urls": urls}, None


def dimensions(resolution: str, ratio: str) -> tuple[int, int]:
    """Output size for a resolution and aspect ratio: the area of a side² square."""
    side = RESOLUTION_SIDE[resolution]
    a, b = (int(x) for x in ratio.split(":"))
    width = side * math.sqrt(a / b)
    height = side * math.sqrt(b / a)
    return max(8, round(width / 8) * 8), max(8, round(height / 8) * 8)


async def create(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    doc = await _json_body(request)
    if isinstance(doc, Response):
        return doc
    req, problem = validate_create(doc)
    if problem:
        state.stats.rejections["validation"] += 1
        return pixwith_error(problem)
    params = req["params"]
    n = params["num_outputs"]
    pixwith = account(state)
    # credits that the tasks still running will cost if they succeed
    if pixwith.credits - state.reserved(NAME) < CREDITS_PER_IMAGE * n:
        state.stats.rejections["balance"] += 1
        return pixwith_error("Credits not enough")
    # Emulator choice: Pixwith documents no concurrency limit; we cap unfinished tasks like
    # Wiro does, so clients meet (and must survive) a busy account.
    if state.active_count(NAME) >= state.config.concurrency:
        state.stats.rejections["concurrency"] += 1
        state.stats.concurrency_refusals[NAME] += 1
        return pixwith_error("Too many tasks in progress, please try again later")
    width, height = dimensions(params["resolution"], params["aspect_ratio"])
    task = state.new_task(
        NAME, model=MODEL_ID, prompt=req["prompt"], params=params,
        inputs=tuple(state.identity(u) for u in req["image_urls"]), images=n,
        width=width, height=height, reserve=CREDITS_PER_IMAGE * n,
    )
    return pixwith_ok({"task_id": task.id,
                       "estimated_time": max(1, math.ceil(state.config.latency))})


async def get(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    doc = await _json_body(request)
    if isinstance(doc, Response):
        return doc
    task_id = doc.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        return pixwith_error("task_id is required")
    task = state.tasks.get((NAME, task_id))
    if task is None:
        state.stats.rejections["not_found"] += 1
        return pixwith_error("Task not found")
    state.count_poll(task)
    base = base_url(request)
    urls = [f"{base}/files/{o.file.path}" for o in task.outputs] \
        if task.outcome == "succeeded" else []
    return pixwith_ok({"task_id": task.id, "status": status_code(task), "result_urls": urls})


async def get_credits(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    return pixwith_ok({"credits": account(state).credits})


def _policy_signature(state: EmulatorState, policy: str) -> str:
    return hmac.new(account(state).upload_secret, policy.encode(), hashlib.sha256).hexdigest()


async def pre_url(request: Request, state: EmulatorState) -> Response:
    """A presigned S3-style POST for one reference image (jpg/jpeg/png, ≤ 10 MB, 10 min)."""
    if (denied := check_auth(request, state)) is not None:
        return denied
    doc = await _json_body(request)
    if isinstance(doc, Response):
        return doc
    name, ctype = doc.get("image_name"), doc.get("content_type")
    if not isinstance(name, str) or not name.strip():
        return pixwith_error("image_name is required")
    if not isinstance(ctype, str) or not ctype.strip():
        return pixwith_error("content_type is required")
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in IMAGE_TYPES or ctype.strip().lower() not in ("image/jpeg", "image/jpg",
                                                               "image/png"):
        return pixwith_error("Invalid image format")
    now = state.now()
    expires = now + account(state).upload_ttl
    key = f"uploads/{uuid.uuid4().hex}.{ext}"
    expiration = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    policy = base64.b64encode(json.dumps({
        "expiration": expiration,
        "conditions": [{"bucket": "pixwith-uploads"}, {"key": key},
                       {"Content-Type": ctype}, ["content-length-range", 1, MAX_UPLOAD_BYTES]],
    }).encode()).decode()
    date = datetime.fromtimestamp(now, UTC)
    fields = {
        "key": key,
        "Content-Type": ctype,
        "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": f"EMULATOR/{date:%Y%m%d}/us-east-1/s3/aws4_request",
        "x-amz-date": f"{date:%Y%m%dT%H%M%SZ}",
        "policy": policy,
        "x-amz-signature": _policy_signature(state, policy),
    }
    account(state).uploads[key] = {"expires": expires, "content_type": ctype, "policy": policy}
    base = base_url(request)
    return pixwith_ok({"upload_url": {"url": f"{base}/pixwith-upload/pixwith-uploads",
                                      "fields": fields},
                       "image_url": f"{base}/files/pixwith/{key}"})


async def upload_target(request: Request, state: EmulatorState) -> Response:
    """The object store behind ``pre_url``: multipart POST of the fields, then ``file``;
    204 on success, S3-style XML errors otherwise."""
    try:
        async with request.form(max_files=1, max_fields=50,
                                max_part_size=64 * 1024) as form:
            values = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            part = form.get("file")
            data = await part.read(MAX_UPLOAD_BYTES + 1) if part is not None and not isinstance(
                part, str) else None
    except Exception as exc:  # the multipart parser's own errors
        return s3_error(400, "MalformedPOSTRequest",
                        f"The body of your POST request is not well-formed multipart/form-data. "
                        f"({exc})")
    key = values.get("key", "")
    pending = account(state).uploads.get(key)
    if pending is None:
        return s3_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition "
                                             "failed: [\"eq\", \"$key\"]")
    policy = values.get("policy", "")
    given = values.get("x-amz-signature", "")
    if policy != pending["policy"] or not hmac.compare_digest(
            given.encode(), _policy_signature(state, policy).encode()):
        return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                                                      "not match the signature you provided.")
    if state.now() > pending["expires"]:
        return s3_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    if values.get("Content-Type") != pending["content_type"]:
        return s3_error(403, "AccessDenied", "Invalid according to Policy: Policy Condition "
                                             "failed: [\"eq\", \"$Content-Type\"]")
    if data is None:
        return s3_error(400, "InvalidArgument", "POST requires exactly one file upload per "
                                                "request.")
    if len(data) > MAX_UPLOAD_BYTES:
        return s3_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum "
                                               "allowed size")
    if not data:
        return s3_error(400, "EntityTooSmall", "Your proposed upload is smaller than the "
                                               "minimum allowed size")
    state.store(f"pixwith/{key}", data, pending["content_type"])
    del account(state).uploads[key]
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return Response(status_code=204, headers={"etag": f'"{etag}"'})


async def not_found(request: Request, state: EmulatorState) -> Response:
    return pixwith_error("Not found", status=404)


PATH = "/pixwith/api"


def routes(kit: Any) -> list[Route]:
    """Pixwith's routes; ``kit`` wraps handlers with the emulator's faults and counters."""
    P = PATH
    return [
        Route(f"{P}/task/create", kit.api(create), methods=["POST"]),
        Route(f"{P}/task/get", kit.api(get), methods=["POST"]),
        Route(f"{P}/task/pre_url", kit.api(pre_url), methods=["POST"]),
        Route(f"{P}/task/get_credits", kit.api(get_credits), methods=["POST"]),
        Route(f"{P}/{{rest:path}}", kit.api(not_found, f"* {P}/(unknown)"),
              methods=kit.ALL_METHODS),
        Route("/pixwith-upload/{bucket}", kit.upload(upload_target, "POST /pixwith-upload"),
              methods=["POST"]),
    ]
