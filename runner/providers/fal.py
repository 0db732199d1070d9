"""fal.ai client: Seedream 4.0 and 4.5 on fal's queue API at ``https://queue.fal.run``.

Wire facts (docs/hosts/fal.md has the whole story and the sources):

* ``Authorization: Key $FAL_KEY`` on every API call (never on downloads);
* submit: ``POST <base>/<endpoint id>`` with the model's input as JSON, the endpoint id
  being ``fal-ai/bytedance/seedream/v4[.5]/text-to-image`` or ``…/edit`` (a job with
  reference images) → ``{"request_id", "response_url", "status_url", "cancel_url",
  "queue_position"}``. The follow-up URLs use the app id without the endpoint's subpath
  (``…/fal-ai/bytedance/requests/<id>/status``); fal says not to build them: this client
  only ever uses the ones a submit answered with (see :func:`encode_task_id`);
* status: ``GET status_url`` → ``{"status": "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED", …}``
  (HTTP 202 until complete, then 200). A failed request is COMPLETED too: its status may
  carry ``error`` / ``error_type`` and its result answers the model's own error (fal: "If
  the model returned an error, this operation returns the same error"), e.g. 422
  ``{"detail": [{"loc", "msg", "type"}]}``; third-party reports confirm fal never says
  FAILED (TanStack/ai#396);
* result: ``GET response_url`` → ``{"images": [{"url", "content_type", "file_name",
  "file_size", "width", "height"}], "seed"}``, kept one hour after completion;
* cancel: ``PUT cancel_url`` → 202 ``{"status": "CANCELLATION_REQUESTED"}`` (a queued
  request is removed; a running one gets a signal the model may ignore) or 400
  ``{"status": "ALREADY_COMPLETED"}``;
* reference images go in ``image_urls``: URLs as they are, local files as ``data:`` URIs
  (fal accepts base64 data URIs wherever it takes a file URL).

fal answers no cost: a status carries none, and the report charges the images at the plan's
price per image, marked as an estimate.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from runner.catalog import ModelSpec
from runner.errors import (
    CancelUnsupported,
    JobRejected,
    ProviderError,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef, Job
from runner.media import sniff_image
from runner.providers.base import RemoteOutput, SubmitResult, TaskState, TaskStatus
from runner.providers.http import (
    HttpProvider,
    as_float,
    as_int,
    as_mapping,
    excerpt,
    http_status_error,
)

log = logging.getLogger(__name__)

PROVIDER = "fal"
TEXT_TO_IMAGE, EDIT = "text-to-image", "edit"
QUEUED, RUNNING, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
#: ``error_type`` of a request stopped by its client (fal's request-error table: 499).
CANCELLED_TYPES = frozenset({"client_cancelled"})
#: A local reference image travels inside the JSON body as a data URI; BytePlus, which runs
#: the model, takes images up to 10 MB (third party for fal).
MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: HTTP 504 on a submit: a gateway gave up waiting; the request may have been queued.
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})


# -- task ids (pure) --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QueueRequest:
    """One queued request: its id and the three URLs its submit answered with."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


def _relative(base: str, url: str) -> str:
    """``url`` relative to ``base`` when it lies under it, else ``url`` unchanged."""
    prefix = base.rstrip("/") + "/"
    return url[len(prefix):] if url.startswith(prefix) else url


def _absolute(base: str, ref: str) -> str:
    return ref if ref.startswith(("http://", "https://")) else f"{base.rstrip('/')}/{ref}"


def encode_task_id(base: str, request: QueueRequest) -> str:
    """The task id the journal keeps: everything needed to follow the request after a
    restart, and nothing secret.

    The journal stores one string per job, and a resumed run (after kill -9) must poll,
    fetch and cancel through the very URLs the submit answered with — fal says never to
    build them. So the id *is* those URLs, made relative to the base URL (a resumed
    ``--emulate`` run serves the emulator on a new port; a real run may move
    ``FAL_BASE_URL`` to fal's backup host). When the answer has fal's documented shape —
    status and cancel URLs are the response URL plus ``/status`` and ``/cancel``, and the
    response URL ends with the request id — the id is just the relative response URL,
    readable in reports: ``fal-ai/bytedance/requests/<request id>``. Any other shape is kept
    whole as JSON, so nothing the host said is ever guessed back. Decoding is exact either
    way (:func:`decode_task_id`)."""
    response = _relative(base, request.response_url)
    compact = (request.status_url == request.response_url + "/status"
               and request.cancel_url == request.response_url + "/cancel"
               and request.response_url.endswith("/" + request.request_id)
               and not response.startswith(("http://", "https://", "{")))
    if compact:
        return response
    return json.dumps({"request_id": request.request_id,
                       "status_url": _relative(base, request.status_url),
                       "response_url": response,
                       "cancel_url": _relative(base, request.cancel_url)},
                      separators=(",", ":"))


def decode_task_id(base: str, task_id: str) -> QueueRequest:
    """The request a task id names (see :func:`encode_task_id`); JobRejected when the id
    is not one this client made."""
    text = task_id.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            return QueueRequest(str(doc["request_id"]), _absolute(base, doc["status_url"]),
                                _absolute(base, doc["response_url"]),
                                _absolute(base, doc["cancel_url"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise JobRejected(f"task id {excerpt(task_id)!r} is not a fal request",
                              provider=PROVIDER) from None
    if not text or text.startswith(("http://", "https://")):
        raise JobRejected(f"task id {excerpt(task_id)!r} is not a fal request",
                          provider=PROVIDER)
    response = _absolute(base, text)
    return QueueRequest(text.rsplit("/", 1)[-1], response + "/status", response,
                        response + "/cancel")


# -- the wire form of a job (pure) ------------------------------------------------------------

def endpoint_for(spec: ModelSpec, job: Job) -> str:
    """The fal endpoint id of ``job``: the edit endpoint when it has reference images."""
    return f"{spec.endpoint}/{EDIT if job.images else TEXT_TO_IMAGE}"


def data_uri(ref: ImageRef) -> str:
    """A local reference image as a ``data:<type>;base64,…`` URI; JobRejected naming the
    file when it cannot be read, is too large or is not an image."""
    assert ref.path is not None
    try:
        size = os.stat(ref.path).st_size
        if size > MAX_IMAGE_BYTES:
            raise JobRejected(f"reference image {ref.ref!r} is {size:,} bytes; fal is sent at "
                              f"most {MAX_IMAGE_BYTES:,} (10 MB) inline — give a URL instead",
                              provider=PROVIDER)
        with open(ref.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                          provider=PROVIDER) from None
    sniffed = sniff_image(data[:32])
    if sniffed is None:
        raise JobRejected(f"reference image {ref.ref!r} is not a recognised image",
                          provider=PROVIDER)
    return f"data:{sniffed[0]};base64,{base64.b64encode(data).decode('ascii')}"


def image_urls(job: Job) -> list[str]:
    urls: list[str] = []
    for ref in job.images:
        if ref.url is not None:
            urls.append(ref.url)
        elif ref.path is not None:
            urls.append(data_uri(ref))
        else:
            raise JobRejected(f"reference image {ref.ref!r} has neither a path nor a URL",
                              provider=PROVIDER)
    return urls


def input_body(job: Job, urls: list[str]) -> dict[str, Any]:
    """The model input: the prompt, every parameter (None means "leave it out"), and the
    reference images as ``image_urls`` for the edit endpoint."""
    body: dict[str, Any] = {"prompt": job.prompt}
    body.update({k: v for k, v in job.params.items() if v is not None})
    if urls:
        body["image_urls"] = urls
    return body


# -- answers (pure) ---------------------------------------------------------------------------

def parse_submit(doc: Mapping[str, Any]) -> QueueRequest:
    fields = [doc.get(k) for k in ("request_id", "status_url", "response_url", "cancel_url")]
    if not all(isinstance(v, str) and v for v in fields):
        raise UnknownOutcome("the queue answered without request_id, status_url, response_url "
                             "and cancel_url; a request may have been queued",
                             provider=PROVIDER)
    rid, status, response, cancel = (str(v) for v in fields)
    return QueueRequest(rid, status, response, cancel)


def detail_text(doc: Mapping[str, Any] | None, fallback: str) -> str:
    """fal's ``detail``: a string, or a list of ``{"loc", "msg", "type"}`` (each shown as
    ``loc: msg (type)``)."""
    detail = (doc or {}).get("detail")
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                msg = str(item.get("msg") or "").strip()
                kind = item.get("type")
                parts.append(f"{loc + ': ' if loc else ''}{msg}" + (f" ({kind})" if kind else ""))
            else:
                parts.append(str(item))
        if parts:
            return "; ".join(parts)
    return fallback


def parse_images(doc: Mapping[str, Any]) -> tuple[RemoteOutput, ...]:
    outputs = []
    for item in doc.get("images") or []:
        if isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"]:
            url = item["url"]
            name = item.get("file_name") or posixpath.basename(urlsplit(url).path) or None
            outputs.append(RemoteOutput(url=url, name=str(name) if name else None,
                                        content_type=item.get("content_type") or None,
                                        size=as_int(item.get("file_size"))))
    return tuple(outputs)


class FalProvider(HttpProvider):
    """fal's queue API over HTTP. A poll of a completed request also fetches its result."""

    name = PROVIDER

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
                         timeout=timeout, concurrency=concurrency)
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}"}

    def _error(self, response: httpx.Response, what: str) -> ProviderError:
        doc = self.json_body(response, what)
        detail = self._excerpt(detail_text(doc, response.text or ""))
        err = http_status_error(response, PROVIDER, self._secrets, detail=f"{what}: {detail}")
        return err if err is not None else ServerError(
            f"{what}: unexpected HTTP {response.status_code}", provider=PROVIDER,
            http_status=response.status_code)

    # -- the Provider interface -----------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        endpoint = endpoint_for(spec, job)
        body = input_body(job, image_urls(job))
        response = await self.send("submit", "POST", f"{self.base_url}/{endpoint}", json=body,
                                   headers=self._headers(), creates=True,
                                   what=f"submit to {endpoint}")
        status = response.status_code
        if status in SUBMIT_AMBIGUOUS_HTTP or 300 <= status < 400:
            raise UnknownOutcome(f"submit to {endpoint} answered HTTP {status} (a gateway's "
                                 f"timeout, or a redirect not followed); a request may have "
                                 f"been queued", provider=PROVIDER, http_status=status)
        if status >= 300:
            # 401/403 auth, 429 rate, 5xx server (fal bills no 5xx), other 4xx refused: the
            # queue answered, so no request exists.
            raise self._error(response, f"submit to {endpoint}")
        doc = self.json_body(response, "submit")
        if doc is None:
            raise UnknownOutcome(f"submit to {endpoint} answered HTTP {status} without JSON; "
                                 f"a request may have been queued", provider=PROVIDER,
                                 http_status=status)
        request = parse_submit(doc)
        return SubmitResult(task_id=encode_task_id(self.base_url, request))

    async def poll(self, task_id: str) -> TaskStatus:
        request = decode_task_id(self.base_url, str(task_id))
        response = await self.send("poll", "GET", request.status_url, headers=self._headers(),
                                   what=f"status of {request.request_id}")
        if response.status_code >= 300:
            raise self._error(response, f"status of {request.request_id}")
        doc = self.json_body(response, "poll")
        if doc is None:
            raise self.not_json_error(response, f"status of {request.request_id}")
        word = str(doc.get("status") or "")
        if word == QUEUED:
            return TaskStatus(task_id, TaskState.QUEUED, word)
        if word == COMPLETED:
            return await self._completed(task_id, request, doc)
        if word != RUNNING:
            log.warning("fal request %s: unknown status %r, treated as running",
                        request.request_id, word)
        return TaskStatus(task_id, TaskState.RUNNING, word)

    async def _completed(self, task_id: str, request: QueueRequest,
                         status: Mapping[str, Any]) -> TaskStatus:
        """A COMPLETED request: its result says whether it succeeded (a second call)."""
        error, error_type = status.get("error"), status.get("error_type")
        word = COMPLETED + (f" error_type={error_type}" if error_type else "")
        elapsed = as_float(as_mapping(status.get("metrics")).get("inference_time"))
        if error_type in CANCELLED_TYPES:
            return TaskStatus(task_id, TaskState.CANCELLED, word, error=str(error or "") or None)
        response = await self.send("poll", "GET", request.response_url,
                                   headers=self._headers(),
                                   what=f"result of {request.request_id}")
        doc = self.json_body(response, "result")
        code = response.status_code
        if code < 300:
            outputs = parse_images(doc or {})
            if not outputs:
                return TaskStatus(task_id, TaskState.FAILED, word,
                                  error="fal completed the request without any image",
                                  elapsed_seconds=elapsed)
            # fal answers no cost: the status carries none, and the report charges the
            # images at the plan's price per image (marked as an estimate)
            return TaskStatus(task_id, TaskState.SUCCEEDED, word, outputs=outputs,
                              elapsed_seconds=elapsed)
        err = http_status_error(response, PROVIDER, self._secrets)
        # The result replays the model's own answer. Credentials, throttling and, for a
        # request whose status names no error, a server failure are about this call (try
        # again); anything else is the request's verdict.
        transient = code in (401, 403, 408, 429) or (code >= 500 and not error)
        if transient and err is not None:
            raise self._error(response, f"result of {request.request_id}")
        reason = detail_text(doc, str(error or "") or f"HTTP {code}")
        if code == 404 and not error:
            reason = f"fal has no result for the request (kept one hour after completion): " \
                     f"{reason}"
        return TaskStatus(task_id, TaskState.FAILED, f"{word} HTTP {code}",
                          error=self._excerpt(reason), elapsed_seconds=elapsed)

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Remove a queued request. A running one gets fal's cancellation signal, which the
        model may ignore: it is then followed to its end (CancelUnsupported), never given up
        while it may still be billed."""
        if state.terminal:
            return
        request = decode_task_id(self.base_url, str(task_id))
        response = await self.send("cancel", "PUT", request.cancel_url, headers=self._headers(),
                                   what=f"cancel of {request.request_id}")
        doc = self.json_body(response, "cancel") or {}
        said = str(doc.get("status") or "")
        if response.status_code == 400 and said == "ALREADY_COMPLETED":
            raise JobRejected(f"fal request {request.request_id} has already completed",
                              provider=PROVIDER, http_status=400)
        if response.status_code >= 300:
            raise self._error(response, f"cancel of {request.request_id}")
        after = await self.poll(task_id)
        if after.state is TaskState.CANCELLED:
            return
        if after.state.terminal:
            raise JobRejected(f"fal request {request.request_id} ended ({after.state}) before "
                              f"the cancel reached it", provider=PROVIDER)
        raise CancelUnsupported(f"fal took the cancellation of request {request.request_id} "
                                f"({said or 'no status'}) but it is {after.provider_status}: "
                                f"the model decides whether a running request stops; it is "
                                f"followed to its end", provider=PROVIDER)
