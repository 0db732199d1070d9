"""The emulated BytePlus ModelArk image API (``/byteplus/api/v3``): one synchronous
``POST /images/generations`` that holds the call for the emulated latency (the emulator's
clock: ``/__clock`` and ``ManualClock`` move it) and answers with the images — as JSON, or
as server-sent events with ``stream: true``.

Envelope and codes follow BytePlus's common error table: ``{"error": {"code", "message",
"param", "type"}}`` with 400 ``InvalidParameter`` / ``MissingParameter``, 401
``AuthenticationError``, 404 ``InvalidEndpointOrModel.NotFound``, 429, 500
``InternalServiceError``. Fates: the ``fail`` fate (``emulator:fail``) makes the last image
of a set fail (a 200 with a partial failure: only the others are billed), or a single-image
call fail with 400 ``OutputImageSensitiveContentDetected`` (nothing billed).

Emulator choices, not vendor facts: named sizes are square; images are PNG (the host sends
JPEG); with ``stream: true`` every event is sent when the whole call is done (the host sends
each image's event as it is made); a call beyond ``concurrency`` calls in flight answers 429.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runner.emulator.http import base_url
from runner.emulator.state import EmulatorState, ProviderContext, ProviderState, Task

NAME = "byteplus"
KEY_VAR = "ARK_API_KEY"
PATH = "/byteplus/api/v3"
MODEL_40, MODEL_45 = "seedream-4-0-250828", "seedream-4-5-251128"
MAX_REFERENCES, MAX_TOTAL, MAX_PIXELS = 14, 15, 16_777_216
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Per model: its named sizes, the least pixels of a WxH size, its prompt optimisation modes.
MODELS: dict[str, dict[str, Any]] = {
    MODEL_40: {"sizes": {"1K": 1024, "2K": 2048, "4K": 4096}, "min_pixels": 921_600,
               "modes": ("standard", "fast")},
    MODEL_45: {"sizes": {"2K": 2048, "4K": 4096}, "min_pixels": 3_686_400,
               "modes": ("standard",)},
}
FIELDS = ("model", "prompt", "image", "size", "sequential_image_generation",
          "sequential_image_generation_options", "stream", "response_format", "watermark",
          "optimize_prompt_options")
ONLY_SEEDREAM_3 = ("seed", "guidance_scale")
DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp|bmp|tiff|gif);base64,(.+)$", re.S)
WXH = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
URL_TTL = 86_400  # output links are valid 24 hours
HOLD_TICK = 0.02  # seconds between two looks at the clock while a call is held
BLOCKED = {"code": "OutputImageSensitiveContentDetected",
           "message": "The request failed because the output image may contain sensitive "
                      "information."}


# --- envelopes ----------------------------------------------------------------------------
def ark_error(status: int, code: str, message: str, *, param: str = "", kind: str = "",
              headers: Mapping[str, str] | None = None) -> JSONResponse:
    kind = kind or {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden",
                    404: "NotFound", 429: "TooManyRequests"}.get(status, "InternalServerError")
    request_id = request_id_now()
    return JSONResponse({"error": {"code": code, "message": f"{message} Request id: {request_id}",
                                   "param": param, "type": kind}},
                        status_code=status, headers={"x-request-id": request_id,
                                                     **(headers or {})})


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 429 or 500 of the shared fault injection, in ModelArk's envelope."""
    if status == 429:
        return ark_error(429, "RateLimitExceeded.EndpointRPMExceeded",
                         "The request has exceeded the rate limit. Please try again later.",
                         headers=headers)
    return ark_error(status, "InternalServiceError",
                     "The service encountered an unexpected internal error.", headers=headers)


def request_id_now() -> str:
    return f"02{int(time.time() * 1000)}{uuid.uuid4().hex[:24]}"


class Invalid(Exception):
    def __init__(self, param: str, message: str, code: str = "InvalidParameter",
                 status: int = 400) -> None:
        super().__init__(message)
        self.param, self.message, self.code, self.status = param, message, code, status

    def response(self) -> JSONResponse:
        return ark_error(self.status, self.code, self.message, param=self.param)


# --- the account --------------------------------------------------------------------------
@dataclass
class BytePlusTask(Task):
    """A call's generation. ``asked``: images asked for; a ``fail`` fate with several asked
    fails only the last (the others are made and billed)."""

    asked: int = 1
    failed_images: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.fails and self.asked > 1:
            self.fails = False
            self.images = self.asked - 1
            self.failed_images = (self.asked - 1,)


class BytePlusState(ProviderState):
    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.key = self.credentials[KEY_VAR]
        endpoint_model = str(self.options["endpoint_model"])
        if endpoint_model not in MODELS:
            raise ValueError(f"{NAME}.endpoint_model must be one of {', '.join(MODELS)}, not "
                             f"{endpoint_model!r}")
        self.endpoint_model = endpoint_model


def account(state: EmulatorState) -> BytePlusState:
    part = state.part(NAME)
    assert isinstance(part, BytePlusState)
    return part


def make_state(context: ProviderContext) -> BytePlusState:
    return BytePlusState(context)


# --- validation ---------------------------------------------------------------------------
def _bool(doc: Mapping[str, Any], name: str) -> None:
    if name in doc and not isinstance(doc[name], bool):
        raise Invalid(name, f"The parameter `{name}` specified in the request is not valid: "
                            f"expected a boolean.")


def _reference(value: Any, where: str) -> str:
    """One reference image → its identity (a URL, or the hash of a data URI's bytes)."""
    if not isinstance(value, str) or not value:
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"expected a URL or a base64 data URI.")
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return value
    match = DATA_URI.match(value)
    if match is None:
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"expected an http(s) URL or data:image/<format>;base64,<data> with "
                             f"a format of png, jpeg, webp, bmp, tiff or gif.")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"the base64 data cannot be decoded.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"the image is larger than 10 MB.")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def size_of(model: str, value: Any) -> tuple[int, int]:
    spec = MODELS[model]
    if not isinstance(value, str):
        raise Invalid("size", "The parameter `size` specified in the request is not valid: "
                              "expected a string.")
    if value in spec["sizes"]:
        side = spec["sizes"][value]
        return side, side
    match = WXH.match(value)
    if match is None:
        raise Invalid("size", f"The parameter `size` specified in the request is not valid: "
                              f"expected one of {', '.join(spec['sizes'])} or WIDTHxHEIGHT.")
    w, h = int(match.group(1)), int(match.group(2))
    if not spec["min_pixels"] <= w * h <= MAX_PIXELS:
        raise Invalid("size", f"The parameter `size` specified in the request is not valid: "
                              f"the total pixels must be within [{spec['min_pixels']}, "
                              f"{MAX_PIXELS}].")
    if not 1 / 16 <= w / h <= 16:
        raise Invalid("size", "The parameter `size` specified in the request is not valid: the "
                              "aspect ratio must be within [1/16, 16].")
    return w, h


def validate(doc: Mapping[str, Any], endpoint_model: str) -> dict[str, Any]:
    """The request, checked field by field; raises :class:`Invalid` naming the parameter."""
    if not doc.get("model"):
        raise Invalid("model", "The request failed because it is missing one or multiple "
                               "required parameters: model.", "MissingParameter")
    asked = doc["model"]
    if isinstance(asked, str) and asked.startswith("ep-") and len(asked) > 3:
        model = endpoint_model
    elif asked in MODELS:
        model = str(asked)
    else:
        raise Invalid("model", f"The model or endpoint {asked} does not exist or you do not "
                               f"have access to it.", "InvalidEndpointOrModel.NotFound", 404)
    for name in doc:
        if name in ONLY_SEEDREAM_3:
            raise Invalid(name, f"The parameter `{name}` specified in the request is not valid "
                                f"for model {model}: only Seedream 3.0 takes it.")
        if name not in FIELDS:
            raise Invalid(name, f"The parameter `{name}` specified in the request is not "
                                f"valid: unknown parameter.")
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Invalid("prompt", "The request failed because it is missing one or multiple "
                                "required parameters: prompt.", "MissingParameter")
    image = doc.get("image")
    refs: list[str] = []
    if image is not None:
        items = image if isinstance(image, list) else [image]
        if not 1 <= len(items) <= MAX_REFERENCES:
            raise Invalid("image", f"The parameter `image` specified in the request is not "
                                   f"valid: give 1 to {MAX_REFERENCES} images.")
        refs = [_reference(v, "image") for v in items]
    width, height = size_of(model, doc.get("size", "2048x2048"))
    sequential = doc.get("sequential_image_generation", "disabled")
    if sequential not in ("auto", "disabled"):
        raise Invalid("sequential_image_generation", "The parameter "
                      "`sequential_image_generation` specified in the request is not valid: "
                      "expected auto or disabled.")
    options = doc.get("sequential_image_generation_options", {})
    where = "sequential_image_generation_options.max_images"
    if not isinstance(options, Mapping) or set(options) - {"max_images"}:
        raise Invalid("sequential_image_generation_options", "The parameter "
                      "`sequential_image_generation_options` specified in the request is not "
                      "valid: expected {\"max_images\": N}.")
    most = options.get("max_images", 15)
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= 15:
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"expected an integer within [1, 15].")
    if sequential == "auto" and len(refs) + most > MAX_TOTAL:
        raise Invalid(where, f"The parameter `{where}` specified in the request is not valid: "
                             f"reference images + max_images must not exceed {MAX_TOTAL}.")
    for name in ("stream", "watermark"):
        _bool(doc, name)
    response_format = doc.get("response_format", "url")
    if response_format not in ("url", "b64_json"):
        raise Invalid("response_format", "The parameter `response_format` specified in the "
                                         "request is not valid: expected url or b64_json.")
    optimize = doc.get("optimize_prompt_options", {})
    modes = MODELS[model]["modes"]
    if not isinstance(optimize, Mapping) or set(optimize) - {"mode"} or \
            optimize.get("mode", "standard") not in modes:
        raise Invalid("optimize_prompt_options.mode", f"The parameter "
                      f"`optimize_prompt_options.mode` specified in the request is not valid: "
                      f"{model} takes {' or '.join(modes)}.")
    images = most if sequential == "auto" else 1
    params = {"size": f"{width}x{height}", "sequential_image_generation": sequential,
              "max_images": images, "response_format": response_format,
              "watermark": doc.get("watermark", True),
              "optimize_prompt_options": dict(optimize)}
    return {"model": model, "prompt": prompt, "refs": tuple(refs), "width": width,
            "height": height, "images": images, "stream": doc.get("stream", False) is True,
            "params": params}


# --- the endpoint -------------------------------------------------------------------------
def check_auth(request: Request, state: EmulatorState) -> Response | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key or \
            not hmac.compare_digest(key.strip().encode(), account(state).key.encode()):
        state.stats.rejections["auth"] += 1
        return ark_error(401, "AuthenticationError", "The API key or AK/SK in the request is "
                                                     "missing or invalid.")
    return None


async def _hold(request: Request, state: EmulatorState, task: Task) -> None:
    """Hold the call until the generation ends by the emulator's clock (or the client goes)."""
    while not task.terminal:
        if await request.is_disconnected():
            return
        end = state.part(NAME).ends_at(task)
        await asyncio.sleep(max(0.001, min(HOLD_TICK, end - state.now())))
        state.settle()


def usage(task: BytePlusTask) -> dict[str, int]:
    made = task.images if task.outcome == "succeeded" else 0
    tokens = made * (task.width * task.height // 256)  # ModelArk counts w × h / 256 an image
    return {"generated_images": made, "output_tokens": tokens, "total_tokens": tokens}


async def _items(request: Request, task: BytePlusTask, b64: bool) -> list[dict[str, Any]]:
    """The answer's ``data``: each image asked for, made (url or b64_json) or failed."""
    base = base_url(request)
    made = iter(task.outputs if task.outcome == "succeeded" else [])
    size = f"{task.width}x{task.height}"
    items: list[dict[str, Any]] = []
    for index in range(task.asked):
        if index in task.failed_images or task.outcome != "succeeded":
            items.append({"error": dict(BLOCKED)})
            continue
        out = next(made)
        if b64:
            data = await out.file.read()
            out.file.fetched += 1  # delivered in the answer itself
            items.append({"b64_json": base64.b64encode(data).decode("ascii"), "size": size})
        else:
            items.append({"url": f"{base}/files/{out.file.path}?X-Tos-Expires={URL_TTL}",
                          "size": size})
    return items


def _events(task: BytePlusTask, model: str, items: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        created = int(task.finished or task.created)
        for index, item in enumerate(items):
            kind = ("image_generation.partial_failed" if "error" in item
                    else "image_generation.partial_succeeded")
            event = {"type": kind, "model": model, "created": created, "image_index": index,
                     **item}
            yield f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
        done = {"type": "image_generation.completed", "model": model, "created": created,
                "usage": usage(task)}
        yield f"event: image_generation.completed\ndata: {json.dumps(done)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return gen()


async def generations(request: Request, state: EmulatorState) -> Response:
    if (denied := check_auth(request, state)) is not None:
        return denied
    try:
        doc = json.loads(await request.body() or b"null")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        state.stats.rejections["validation"] += 1
        return ark_error(400, "InvalidParameter", "The request body is not a JSON object.")
    try:
        req = validate(doc, account(state).endpoint_model)
    except Invalid as exc:
        state.stats.rejections["validation"] += 1
        return exc.response()
    # Emulator choice: calls in flight beyond the emulator's concurrency answer 429 (ModelArk
    # documents rate limits per minute; this makes a busy account show itself).
    if state.active_count(NAME) >= state.config.concurrency:
        state.stats.rejections["concurrency"] += 1
        state.stats.concurrency_refusals[NAME] += 1
        return ark_error(429, "RateLimitExceeded.EndpointRPMExceeded", "The request has "
                         "exceeded the rate limit. Please try again later.")
    task = state.new_task(NAME, model=req["model"], prompt=req["prompt"],
                          params=req["params"], inputs=req["refs"], images=req["images"],
                          width=req["width"], height=req["height"], cls=BytePlusTask,
                          asked=req["images"])
    assert isinstance(task, BytePlusTask)
    await _hold(request, state, task)
    if not task.terminal:  # the client went away: the generation goes on, billed
        return Response(status_code=499)
    request_id = request_id_now()
    items = await _items(request, task, req["params"]["response_format"] == "b64_json")
    if req["stream"]:
        return StreamingResponse(_events(task, req["model"], items),
                                 media_type="text/event-stream",
                                 headers={"x-request-id": request_id})
    if task.outcome != "succeeded":
        return ark_error(400, BLOCKED["code"], BLOCKED["message"])
    return JSONResponse({"model": req["model"], "created": int(task.finished or task.created),
                         "data": items, "usage": usage(task)},
                        headers={"x-request-id": request_id})


async def not_found(request: Request, state: EmulatorState) -> Response:
    return ark_error(404, "NotFound", f"The requested path {request.url.path} does not exist.")


def routes(kit: Any) -> list[Route]:
    """ModelArk's image route; ``kit`` wraps it with the emulator's faults and counters."""
    P = kit.path
    return [
        Route(f"{P}/images/generations", kit.api(generations), methods=["POST"]),
        Route(f"{P}/{{rest:path}}", kit.api(not_found, f"* {P}/(unknown)"),
              methods=kit.ALL_METHODS),
    ]
