"""Replicate client: the official models ``bytedance/seedream-4`` and
``bytedance/seedream-4.5`` at ``https://api.replicate.com/v1``.

Wire facts (docs/hosts/replicate.md has the whole story and its sources):

* ``Authorization: Bearer <REPLICATE_API_TOKEN>``, JSON bodies; errors are problem+json
  ``{"title", "detail", "status"}`` (422 adds ``invalid_fields``);
* ``POST models/<owner>/<name>/predictions`` ``{"input": {...}}`` → 201 and the prediction
  ``{"id", "model", "version", "input", "logs", "output", "error", "status", "created_at",
  "started_at", "completed_at", "urls": {"get", "cancel", "stream"?}, "metrics"}``;
* status ``starting`` → ``processing`` → ``succeeded`` | ``failed`` | ``canceled`` (and
  ``aborted``: a ``Cancel-After`` deadline passed before it started; never sent here);
* ``GET urls.get`` polls, ``POST urls.cancel`` cancels; the output is an array of URIs;
* 429 with ``Retry-After`` and a detail like "Request was throttled. Expected available in
  N seconds." (600 creates a minute); 402 when the account has no credit;
* inputs and outputs are deleted an hour after a prediction ends: download promptly.

``Prefer: wait`` is never sent. It holds the create open until the prediction ends (up to
60 s): for a batch that is a connection and a request slot held per job, and — what matters
most — it widens the window in which an answer lost on the way back leaves a created,
billable prediction whose id we never learnt (an unknown outcome). An immediate 201 keeps
that window as short as a plain request; polling costs a few cheap GETs.

Reference images: URLs are sent as they are; local files as ``data:`` URIs when they are
at most 1 MB (Replicate: "only recommended if the file is less than 1MB"), larger ones
uploaded first through the Files API (``POST files``, multipart ``content``), whose
``urls.get`` goes in ``image_input``, as Replicate's own client does.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from runner.errors import (
    AuthError,
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
from runner.providers.http import (
    HttpProvider,
    as_float,
    as_mapping,
    http_status_error,
)

log = logging.getLogger(__name__)

PROVIDER = "replicate"
#: Local images up to this size go inline as data URIs; larger ones through the Files API.
DATA_URI_MAX_BYTES = 1_000_000
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})  # a gateway gave up: the prediction may exist

STATES = {
    "starting": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "succeeded": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "canceled": TaskState.CANCELLED,
    # ended by a Cancel-After deadline before it started (not billed). seedbatch sends no
    # deadline, so a prediction that shows it was stopped by someone else: a failure.
    "aborted": TaskState.FAILED,
}

# "Request was throttled. Expected available in 7 seconds." (the wording of the issue and
# of clients' tests); Replicate's rate-limit page now shows "Your rate limit resets in
# ~30s." Both are read when no Retry-After header came.
_WAIT_WORDS = re.compile(r"expected available in (\d+(?:\.\d+)?)\s*s"
                         r"|resets in ~?(\d+(?:\.\d+)?)\s*s", re.I)


def retry_after_from(detail: str) -> float | None:
    """Seconds to wait named in a throttled answer's ``detail``, or None."""
    match = _WAIT_WORDS.search(detail or "")
    if not match:
        return None
    return float(match.group(1) or match.group(2))


def problem_text(doc: Mapping[str, Any] | None) -> str:
    """The words of a problem+json answer: its detail (else its title), one line."""
    if not doc:
        return ""
    detail = doc.get("detail")
    if isinstance(detail, str) and detail.strip():
        return " ".join(detail.split())
    title = doc.get("title")
    return str(title).strip() if isinstance(title, str) else ""


def error_for(response: httpx.Response, doc: Mapping[str, Any] | None, *, op: str,
              subject: str, text: str) -> ProviderError:
    """The typed error an HTTP error answer means."""
    status = response.status_code
    kw: dict[str, Any] = {"provider": PROVIDER, "http_status": status}
    if status == 402:
        return InsufficientBalance(f"Replicate: insufficient credit — {text}", **kw)
    if status in (401, 403):
        return AuthError(f"Replicate refused the API token — {text}", **kw)
    if status == 429:
        err = http_status_error(response, PROVIDER, detail=text)
        wait = err.retry_after if err is not None and err.retry_after is not None \
            else retry_after_from(text)
        return RateLimited(f"Replicate throttled the request — {text}", retry_after=wait, **kw)
    if status == 404 and op in ("poll", "cancel"):
        return JobRejected(f"Replicate has no prediction {subject!r}: {text}", **kw)
    if status == 422:
        return JobRejected(f"Replicate refused the input — {text}", **kw)
    err = http_status_error(response, PROVIDER, detail=text)
    return err if err is not None else ServerError(f"Replicate: HTTP {status}: {text}", **kw)


def create_body(job: Job, image_input: list[str]) -> dict[str, Any]:
    """``{"input": {...}}``: the prompt, every parameter the job carries (None: left out)
    and the reference images as ``image_input``."""
    data: dict[str, Any] = {"prompt": job.prompt}
    data.update({k: v for k, v in job.params.items() if v is not None})
    if image_input:
        data["image_input"] = image_input
    return {"input": data}


def output_for(url: str) -> RemoteOutput:
    name = posixpath.basename(urlsplit(url).path) or None
    content_type = mimetypes.guess_type(name)[0] if name else None
    return RemoteOutput(url=url, name=name, content_type=content_type)


def output_urls(output: Any) -> list[str]:
    """The output URIs: an array of strings (a single string is taken as one)."""
    items = output if isinstance(output, list) else [output] if output else []
    return [str(u) for u in items if isinstance(u, str) and u]


def parse_prediction(doc: Mapping[str, Any], task_id: str) -> TaskStatus:
    """A prediction object → TaskStatus. Replicate reports no cost: the status carries none,
    and the report charges the images at the plan's price per image (``cost_estimated``)."""
    raw = str(doc.get("status") or "")
    tid = str(doc.get("id") or task_id)
    metrics = as_mapping(doc.get("metrics"))
    elapsed = as_float(metrics.get("predict_time"))
    state = STATES.get(raw)
    if state is None:
        log.warning("Replicate prediction %s: unknown status %r, treated as running", tid, raw)
        return TaskStatus(tid, TaskState.RUNNING, raw)
    if state is TaskState.SUCCEEDED:
        outputs = tuple(output_for(u) for u in output_urls(doc.get("output")))
        if not outputs:
            why = ("its output was deleted (data_removed: Replicate keeps outputs for an "
                   "hour)" if doc.get("data_removed") else "it listed no output")
            return TaskStatus(tid, TaskState.FAILED, raw, error=f"Replicate reported "
                              f"success but {why}", elapsed_seconds=elapsed)
        return TaskStatus(tid, state, raw, outputs=outputs, elapsed_seconds=elapsed)
    if state is TaskState.FAILED:
        error = doc.get("error")
        reason = str(error).strip() if error else ""
        if raw == "aborted":
            reason = reason or "the prediction was aborted before it started"
        return TaskStatus(tid, state, raw, error=reason or "Replicate reported the "
                          "prediction failed (no error text)", elapsed_seconds=elapsed)
    return TaskStatus(tid, state, raw, elapsed_seconds=elapsed)


class ReplicateProvider(HttpProvider):
    """Replicate over HTTP. ``submit`` uploads large local images, then creates the
    prediction; ``poll``/``cancel`` follow the URLs it answered with."""

    name = PROVIDER
    can_cancel = True

    def __init__(
        self,
        *,
        base_url: str,
        api_token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        concurrency: int = 8,
    ) -> None:
        super().__init__(base_url=base_url, secrets=(api_token,), transport=transport,
                         timeout=timeout, concurrency=concurrency)
        self._token = api_token
        self._urls: dict[str, tuple[str, str]] = {}  # prediction id → (get, cancel)

    # -- plumbing -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _check(self, response: httpx.Response, *, op: str, subject: str) -> dict[str, Any]:
        status = response.status_code
        doc = self.json_body(response, op)
        if status >= 400:
            if op == "submit" and status in SUBMIT_AMBIGUOUS_HTTP:
                raise UnknownOutcome(f"the create answered HTTP {status} from a gateway; a "
                                     f"prediction may have been created", provider=PROVIDER,
                                     http_status=status)
            text = self._excerpt(problem_text(doc) or response.text) or "(empty body)"
            raise error_for(response, doc, op=op, subject=subject, text=text)
        if doc is None:
            raise self.not_json_error(response, op)
        return doc

    def _same_origin(self, url: Any) -> str | None:
        """``url`` when it is on the API's own origin (scheme, host, port), else None: the
        token is only ever sent there."""
        if not isinstance(url, str) or not url:
            return None
        mine, theirs = urlsplit(self.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (mine.scheme, mine.netloc):
            log.warning("Replicate answered a URL off its API origin (%s); not followed",
                        self._excerpt(url))
            return None
        return url

    def urls_for(self, task_id: str) -> tuple[str, str]:
        """(get, cancel) of a prediction: those its create answered with, else the
        documented ones. Deriving them is safe: Replicate documents ``GET
        /v1/predictions/{id}`` and ``POST /v1/predictions/{id}/cancel``, and the ``urls``
        of every create answer are exactly these; a resumed run knows only the id."""
        known = self._urls.get(task_id)
        if known is not None:
            return known
        get = f"{self.base_url}/predictions/{task_id}"
        return get, f"{get}/cancel"

    # -- reference images -----------------------------------------------------------------

    def read_local_image(self, ref: ImageRef) -> tuple[bytes, str]:
        """(bytes, content type) of a local reference image, or JobRejected."""
        assert ref.path is not None
        try:
            with open(ref.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                              provider=PROVIDER) from None
        sniffed = sniff_image(data[:32])
        if sniffed is None:
            raise JobRejected(f"reference image {ref.ref!r} is not a recognised image",
                              provider=PROVIDER)
        return data, sniffed[0]

    async def upload_file(self, ref: ImageRef, data: bytes, content_type: str) -> str:
        """Upload a local image through the Files API; its ``urls.get`` for ``image_input``."""
        assert ref.path is not None
        name = os.path.basename(ref.path) or "image"
        response = await self.send("upload", "POST", f"{self.base_url}/files",
                                   files={"content": (name, data, content_type)},
                                   headers=self._headers(), timeout=self.transfer_timeout,
                                   what=f"upload of {name}")
        doc = self._check(response, op="upload", subject=name)
        url = as_mapping(doc.get("urls")).get("get")
        if not isinstance(url, str) or not url:
            raise ServerError(f"the Files API answered without urls.get for {name}",
                              provider=PROVIDER)
        return url

    async def image_input(self, job: Job) -> list[str]:
        """Every reference image as ``image_input`` wants it, in the job's order; every local
        file is read and checked before anything is uploaded."""
        local: list[tuple[bytes, str] | None] = []
        for ref in job.images:
            if ref.url is not None:
                local.append(None)
            elif ref.path is not None:
                local.append(self.read_local_image(ref))
            else:
                raise JobRejected(f"reference image {ref.ref!r} has neither a path nor a URL",
                                  provider=PROVIDER)
        out: list[str] = []
        for ref, item in zip(job.images, local, strict=True):
            if item is None:
                assert ref.url is not None
                out.append(ref.url)
            elif len(item[0]) <= DATA_URI_MAX_BYTES:
                out.append(f"data:{item[1]};base64,{base64.b64encode(item[0]).decode()}")
            else:
                out.append(await self.upload_file(ref, *item))
        return out

    # -- the Provider interface -----------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        if len(job.images) > spec.max_input_images:
            raise JobRejected(f"{spec.id} takes at most {spec.max_input_images} reference "
                              f"images ({len(job.images)} given)", provider=PROVIDER)
        body = create_body(job, await self.image_input(job))
        url = f"{self.base_url}/models/{spec.endpoint}/predictions"
        response = await self.send("submit", "POST", url, json=body, headers=self._headers(),
                                   creates=True, what=f"create on {spec.endpoint}",
                                   timeout=self.transfer_timeout if job.images
                                   else self.timeout)
        doc = self._check(response, op="submit", subject=spec.endpoint)
        task_id = doc.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise UnknownOutcome("the create answered without a prediction id; a prediction "
                                 "may have been created", provider=PROVIDER,
                                 http_status=response.status_code)
        urls = as_mapping(doc.get("urls"))
        derived = self.urls_for(task_id)
        self._urls[task_id] = (self._same_origin(urls.get("get")) or derived[0],
                               self._same_origin(urls.get("cancel")) or derived[1])
        return SubmitResult(task_id=task_id)

    async def poll(self, task_id: str) -> TaskStatus:
        task_id = str(task_id)
        get, _ = self.urls_for(task_id)
        response = await self.send("poll", "GET", get, headers=self._headers(),
                                   what=f"prediction {task_id}")
        doc = self._check(response, op="poll", subject=task_id)
        return parse_prediction(doc, task_id)

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """``POST urls.cancel``; nothing to do for a prediction that has ended."""
        if state.terminal:
            return
        task_id = str(task_id)
        _, cancel = self.urls_for(task_id)
        response = await self.send("cancel", "POST", cancel, headers=self._headers(),
                                   what=f"cancel of {task_id}")
        self._check(response, op="cancel", subject=task_id)
