"""BytePlus ModelArk client: Seedream 4.0 / 4.5 at ``https://ark.ap-southeast.bytepluses.com/api/v3``.

Wire facts (docs/hosts/byteplus.md has the whole story and the sources):

* ``Authorization: Bearer $ARK_API_KEY``; ``POST images/generations`` with ``{"model",
  "prompt", "image"?, "size", "sequential_image_generation",
  "sequential_image_generation_options"?, "stream", "response_format", "watermark",
  "optimize_prompt_options"?}``; ``model`` is a model id or an endpoint id (``ep-…``);
  ``image`` is a URL or a ``data:image/<fmt>;base64,…`` string, or a list of them;
* the call is **synchronous**: it holds until the images are made and answers ``{"model",
  "created", "data": [{"url", "size"} | {"error": {"code", "message"}}], "usage":
  {"generated_images", "output_tokens", "total_tokens"}}`` — a 200 may hold failed images,
  and only the images made are billed. There is no task id, nothing to poll, no idempotency
  key: a call whose answer is lost is an unknown outcome, its images (if any) lost with it;
* with ``stream: true`` the answer is server-sent events: ``image_generation.partial_succeeded``
  (``image_index``, ``url``, ``size``), ``image_generation.partial_failed`` (``image_index``,
  ``error``), ``image_generation.completed`` (``usage``), then ``data: [DONE]``; a request
  refused before it starts answers JSON whatever ``stream`` says (a third-party observation);
* errors ``{"error": {"code", "message", "param"?, "type"}}``: 400 ``InvalidParameter`` /
  ``MissingParameter`` / sensitive content, 401 ``AuthenticationError``, 403
  ``AccountOverdueError`` / ``AccessDenied``, 404 ``InvalidEndpoint.NotFound``, 429
  (``RateLimitExceeded…``, ``ServerOverloaded``), 500 ``InternalServiceError`` (BytePlus's
  common error code table).

The answer is handed to the executor as a finished task (``SubmitResult.final``); its cost
is ``usage.generated_images`` × the model's list price (ModelArk reports images, not money).
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import posixpath
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from runner.catalog import ModelSpec
from runner.errors import (
    AuthError,
    CancelUnsupported,
    InsufficientBalance,
    JobRejected,
    ProviderError,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef, Job
from runner.media import sniff_image
from runner.providers.base import RemoteOutput, SubmitResult, TaskState, TaskStatus
from runner.providers.http import HttpProvider, as_int, as_mapping, excerpt, parse_retry_after

log = logging.getLogger(__name__)

PROVIDER = "byteplus"
#: A generation holds the call: tens of seconds for one image, minutes for a set of 4K
#: images. The read timeout is the longest silence accepted (between two events when
#: streaming); the write timeout covers up to 14 reference images sent inline.
BYTEPLUS_TIMEOUT = httpx.Timeout(connect=10.0, read=900.0, write=300.0, pool=60.0)
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # per reference image (BytePlus)
#: Reference image formats Seedream 4.x reads (BytePlus's API page).
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff",
                          "image/gif"})
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})  # a gateway timed out: the images may have been made
EVENT_SUCCEEDED = "image_generation.partial_succeeded"
EVENT_FAILED = "image_generation.partial_failed"
EVENT_COMPLETED = "image_generation.completed"


# -- the request --------------------------------------------------------------------------

def data_uri(ref: ImageRef) -> str:
    """A local reference image as ``data:image/<fmt>;base64,…``, or JobRejected naming the
    file and the rule it breaks."""
    assert ref.path is not None
    try:
        size = os.stat(ref.path).st_size
        if size > MAX_IMAGE_BYTES:
            raise JobRejected(f"reference image {ref.ref!r} is {size:,} bytes; BytePlus accepts "
                              f"at most {MAX_IMAGE_BYTES:,} (10 MB)", provider=PROVIDER)
        with open(ref.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                          provider=PROVIDER) from None
    sniffed = sniff_image(data[:16])
    if sniffed is None or sniffed[0] not in INLINE_TYPES:
        found = sniffed[1].upper() if sniffed else "not a recognised image"
        raise JobRejected(f"reference image {ref.ref!r} is {found}; BytePlus accepts JPEG, PNG, "
                          f"WEBP, BMP, TIFF and GIF — convert it, or give a URL",
                          provider=PROVIDER)
    return f"data:{sniffed[0]};base64,{base64.b64encode(data).decode('ascii')}"


def image_field(job: Job) -> str | list[str] | None:
    """The request's ``image``: each reference as a URL or a data URI; one is sent alone,
    several as a list."""
    refs: list[str] = []
    for ref in job.images:
        if ref.url is not None:
            refs.append(ref.url)
        elif ref.path is not None:
            refs.append(data_uri(ref))
        else:
            raise JobRejected(f"reference image {ref.ref!r} has neither a path nor a URL",
                              provider=PROVIDER)
    if not refs:
        return None
    return refs[0] if len(refs) == 1 else refs


def request_body(spec: ModelSpec, job: Job, image: str | list[str] | None) -> dict[str, Any]:
    """The JSON body: ``model`` (the job's, else the model's id), the prompt, the images,
    then every parameter with the documented defaults made explicit — ``watermark``
    included, so BytePlus's own default (true) never applies unasked."""
    params = spec.with_defaults(job.params)
    body: dict[str, Any] = {"model": params.pop("model", None) or spec.endpoint,
                            "prompt": job.prompt}
    if image is not None:
        body["image"] = image
    body.update(params)
    return body


# -- the answer ---------------------------------------------------------------------------

def output_for(url: str) -> RemoteOutput:
    name = posixpath.basename(urlsplit(url).path) or None
    content_type = mimetypes.guess_type(name)[0] if name else None
    return RemoteOutput(url=url, name=name, content_type=content_type)


def _error_text(error: Any) -> str:
    err = as_mapping(error)
    code, message = err.get("code"), err.get("message")
    return ": ".join(str(p) for p in (code, message) if p) or "no reason given"


def final_status(task_id: str, urls: Iterable[str], failures: list[str],
                 generated: int | None, price_per_image: float | None,
                 *, cut_short: str = "") -> TaskStatus:
    """The call's images as a finished task: succeeded when at least one image came back
    (failed images named in ``error``), else failed. Cost: images made × list price."""
    outputs = tuple(output_for(u) for u in urls)
    made = generated if generated is not None else len(outputs)
    cost = made * price_per_image if price_per_image is not None else None
    notes = [f"{len(failures)} image{'s' if len(failures) != 1 else ''} failed: "
             f"{'; '.join(failures)}"] if failures else []
    if cut_short:
        notes.append(cut_short)
    status_word = f"{len(outputs)} generated" + (f", {len(failures)} failed" if failures else "")
    if outputs:
        return TaskStatus(task_id, TaskState.SUCCEEDED, status_word, outputs=outputs,
                          cost_usd=cost, error="; ".join(notes) or None)
    return TaskStatus(task_id, TaskState.FAILED, status_word, cost_usd=cost or None,
                      error="; ".join(notes) or "BytePlus returned no image")


def parse_answer(doc: Mapping[str, Any], task_id: str,
                 price_per_image: float | None) -> TaskStatus:
    """A JSON answer (``stream: false``) → the finished task."""
    urls: list[str] = []
    failures: list[str] = []
    for item in doc.get("data") or []:
        item = as_mapping(item)
        if isinstance(item.get("url"), str) and item["url"]:
            urls.append(item["url"])
        elif item.get("error") is not None:
            failures.append(_error_text(item["error"]))
    generated = as_int(as_mapping(doc.get("usage")).get("generated_images"))
    return final_status(task_id, urls, failures, generated, price_per_image)


class StreamReader:
    """Server-sent events of a streamed answer, fed line by line: the images so far (by
    ``image_index``), the failures, the usage, and whether ``[DONE]`` came."""

    def __init__(self) -> None:
        self.urls: dict[int, str] = {}
        self.failures: list[str] = []
        self.generated: int | None = None
        self.error: Mapping[str, Any] | None = None  # an error event: the call failed
        self.done = False
        self._data: list[str] = []

    def feed(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
        # `event:`, `id:`, `retry:` and comments: the type is in the data too

    def close(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        if not self._data:
            return
        text, self._data = "\n".join(self._data), []
        if text.strip() == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(text)
        except ValueError:
            log.warning("BytePlus stream: an event that is not JSON: %s", excerpt(text))
            return
        if not isinstance(event, Mapping):
            return
        kind = event.get("type")
        index = as_int(event.get("image_index"))
        if kind == EVENT_SUCCEEDED and isinstance(event.get("url"), str):
            self.urls[index if index is not None else len(self.urls)] = event["url"]
        elif kind == EVENT_FAILED:
            self.failures.append(_error_text(event.get("error")))
        elif kind == EVENT_COMPLETED:
            self.generated = as_int(as_mapping(event.get("usage")).get("generated_images"))
        elif event.get("error") is not None:
            self.error = as_mapping(event["error"])

    def status(self, task_id: str, price_per_image: float | None, *,
               cut_short: str = "") -> TaskStatus:
        if self.error is not None:
            self.failures.append(_error_text(self.error))
        urls = [self.urls[i] for i in sorted(self.urls)]
        return final_status(task_id, urls, self.failures, self.generated, price_per_image,
                            cut_short=cut_short)


def error_for(status: int, doc: Mapping[str, Any] | None, text: str,
              headers: Mapping[str, str]) -> ProviderError:
    """The typed error of a refused call (``{"error": {"code", "message", "param"?}}``)."""
    err = as_mapping(as_mapping(doc).get("error"))
    code = str(err.get("code") or "")
    detail = _error_text(err) if err else text or "(empty body)"
    if err.get("param"):
        detail += f" (param {err['param']})"
    kw: dict[str, Any] = {"provider": PROVIDER, "http_status": status, "code": code or None}
    if status == 401:
        return AuthError(f"BytePlus refused the API key — HTTP 401: {detail}", **kw)
    if status == 403:
        if code.startswith("AccountOverdue"):
            return InsufficientBalance(f"BytePlus account has an overdue balance — {detail}",
                                       **kw)
        return AuthError(f"BytePlus refused access — HTTP 403: {detail}", **kw)
    if status == 429:
        return RateLimited(f"BytePlus rate limit — HTTP 429: {detail}",
                           retry_after=parse_retry_after(headers.get("retry-after")), **kw)
    if status in SUBMIT_AMBIGUOUS_HTTP:
        return UnknownOutcome(f"images/generations answered HTTP {status} from a gateway; the "
                              f"images may have been made and billed", **kw)
    if status == 408 or status >= 500:
        return ServerError(f"BytePlus server error — HTTP {status}: {detail}", **kw)
    return JobRejected(f"BytePlus refused the request — HTTP {status}: {detail}", **kw)


class BytePlusProvider(HttpProvider):
    """BytePlus ModelArk over HTTP: one synchronous call per job, answered as a finished task."""

    name = PROVIDER
    can_cancel = False

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        concurrency: int = 8,
    ) -> None:
        super().__init__(base_url=base_url, secrets=(api_key,), transport=transport,
                         timeout=timeout or BYTEPLUS_TIMEOUT, concurrency=concurrency)
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        body = request_body(spec, job, image_field(job))
        price = spec.price.usd_per_image
        url = f"{self.base_url}/images/generations"
        if body.get("stream") is True:
            return await self._submit_streamed(url, body, price)
        response = await self.send("submit", "POST", url, json=body, headers=self._headers(),
                                   creates=True, what="images/generations")
        doc = self.json_body(response, "submit")
        if response.status_code >= 400:
            raise error_for(response.status_code, doc, self._excerpt(response.text),
                            response.headers)
        task_id = self._task_id(response)
        if doc is None or not isinstance(doc.get("data"), list):
            raise UnknownOutcome(f"images/generations answered HTTP {response.status_code} "
                                 f"without a readable list of images; images may have been "
                                 f"made and billed: {self._excerpt(response.text)}",
                                 provider=PROVIDER, http_status=response.status_code)
        return SubmitResult(task_id=task_id, final=parse_answer(doc, task_id, price))

    async def _submit_streamed(self, url: str, body: dict[str, Any],
                               price: float | None) -> SubmitResult:
        """``stream: true``: read the events as they come. A stream cut after some images
        keeps those (they are billed: download them) and says so; cut before any is an
        unknown outcome."""
        self.requests_sent["submit"] += 1
        reader = StreamReader()
        task_id = ""
        try:
            async with self._parallel.turn(first=True), self.client.stream(
                    "POST", url, json=body, headers=self._headers()) as response:
                task_id = self._task_id(response)
                kind = response.headers.get("content-type", "")
                if response.status_code >= 400 or "text/event-stream" not in kind:
                    text = (await response.aread()).decode("utf-8", "replace")
                    try:
                        doc = json.loads(text)
                    except ValueError:
                        doc = None
                    if response.status_code >= 400:
                        raise error_for(response.status_code, as_mapping(doc),
                                        self._excerpt(text), response.headers)
                    if isinstance(doc, Mapping) and isinstance(doc.get("data"), list):
                        return SubmitResult(task_id=task_id,
                                            final=parse_answer(doc, task_id, price))
                    raise UnknownOutcome(f"images/generations answered a stream that is not "
                                         f"one: {self._excerpt(text)}", provider=PROVIDER)
                async for line in response.aiter_lines():
                    reader.feed(line)
                reader.close()
        except httpx.TransportError as exc:
            if reader.urls:
                cut = (f"the stream broke after {len(reader.urls)} image(s) "
                       f"({type(exc).__name__}); more may have been made and billed")
                log.warning("BytePlus: %s", cut)
                tid = task_id or self._new_id()
                return SubmitResult(task_id=tid, final=reader.status(tid, price, cut_short=cut))
            raise self.transport_error(exc, creates=True, what="images/generations") from None
        if not reader.done and not reader.urls and reader.error is None:
            raise UnknownOutcome("images/generations: the stream ended without images, an "
                                 "error or [DONE]; images may have been made and billed",
                                 provider=PROVIDER)
        cut = "" if reader.done else "the stream ended before [DONE]"
        return SubmitResult(task_id=task_id, final=reader.status(task_id, price, cut_short=cut))

    def _task_id(self, response: httpx.Response) -> str:
        """ModelArk gives no task id: the request id it answers with, else one made here —
        a name for the call in the journal and report, never asked about again."""
        return response.headers.get("x-request-id") or self._new_id()

    @staticmethod
    def _new_id() -> str:
        return f"call-{uuid.uuid4().hex}"

    async def poll(self, task_id: str) -> TaskStatus:
        """There is nothing to poll: the call answered with its images (or lost them)."""
        raise JobRejected(f"BytePlus ModelArk has no task to ask about ({task_id!r}): a call "
                          f"answers with its images, or its outcome is unknown",
                          provider=PROVIDER)

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Only closing the call could stop a generation, and whether its images are then
        still made and billed is undocumented: :class:`~runner.errors.CancelUnsupported`
        (the executor lets the call run to its answer and downloads the images)."""
        if state.terminal:
            return
        raise CancelUnsupported("BytePlus ModelArk has no call to stop a generation: it runs "
                                "to its answer and is billed", provider=PROVIDER)
