"""Pixwith client: Seedream 4.5 (model_id ``0-32``) at ``https://api.pixwith.ai/api``.

Wire facts (docs/providers.md has the whole story):

* header ``Api-Key``, JSON bodies, answers ``{"code": 1|0, "message", "data"}``;
* ``POST task/create`` ``{"prompt", "image_urls"?, "model_id", "options"}`` →
  ``data.task_id``, ``data.estimated_time``;
* ``POST task/get`` ``{"task_id"}`` → ``data.status`` 1 processing, 2 completed
  (``data.result_urls``), 3 failed;
* local reference images are uploaded first: ``POST task/pre_url`` ``{"image_name",
  "content_type"}`` gives a presigned S3 POST (``data.upload_url.url`` + ``fields``) and the
  CDN URL to use (``data.image_url``); JPEG/PNG only, at most 10 MB (this upload route is
  known from a third-party description published under Pixwith's name);
* no cancel call is documented: :meth:`PixwithProvider.cancel` cannot stop a task.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from runner.catalog import ModelSpec, by_endpoint, models
from runner.errors import (
    AuthError,
    CancelUnsupported,
    ConcurrencyLimited,
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
    as_int,
    as_mapping,
    excerpt,
    first,
    http_status_error,
)

log = logging.getLogger(__name__)

PROVIDER = "pixwith"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_TYPES = {"image/jpeg": ("jpg", "jpeg"), "image/png": ("png",)}
MAX_IMAGE_URLS = 4
UPLOAD_OK = frozenset({200, 201, 204})
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})  # gateway timeout: the task may exist (see wiro.py)

STATUS_PROCESSING, STATUS_COMPLETED, STATUS_FAILED = 1, 2, 3

# Pixwith documents its errors only as messages ("Invalid API KEY", "Credits not enough",
# "Invalid image format", "Invalid image url") and no limits at all. These patterns sort
# them; a busy account or a rate limit said in words is treated as such; anything else is a
# rejection of the job, unless it reads like a server-side failure.
_AUTH_WORDS = re.compile(r"api[ _-]?key|unauthori[sz]ed|forbidden", re.I)
_BALANCE_WORDS = re.compile(r"credits? (?:is |are )?not enough|not enough credits?|insufficient|"
                            r"balance", re.I)
_BUSY_WORDS = re.compile(r"too many (?:tasks|jobs)|tasks? in progress|concurren", re.I)
_RATE_WORDS = re.compile(r"too many requests|rate limit|slow down", re.I)
_SERVER_WORDS = re.compile(r"server|internal|try again|temporar|unavailable|timed? ?out|timeout|"
                           r"overload|busy|maintenance", re.I)


def error_from_message(code: int | None, message: str, *, op: str, subject: str,
                       http_status: int | None = None) -> ProviderError:
    """The typed error for a Pixwith ``{"code": 0, "message"}`` answer."""
    kw: dict[str, Any] = {"provider": PROVIDER, "code": code, "http_status": http_status}
    text = message or "no message"
    if http_status in (401, 403) or _AUTH_WORDS.search(text):
        return AuthError(f"Pixwith refused the API key: {text}", **kw)
    if _BALANCE_WORDS.search(text):
        return InsufficientBalance(f"Pixwith credits exhausted: {text}", **kw)
    if _BUSY_WORDS.search(text):
        return ConcurrencyLimited(f"Pixwith is busy with this account's tasks: {text}", **kw)
    if _RATE_WORDS.search(text):
        return RateLimited(f"Pixwith rate limit: {text}", **kw)
    if _SERVER_WORDS.search(text):
        return ServerError(f"Pixwith server error: {text}", **kw)
    if op == "poll":
        return JobRejected(f"Pixwith cannot report task {subject!r}: {text}", **kw)
    return JobRejected(f"Pixwith refused the request: {text}", **kw)


def options_for(spec: ModelSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options`` object: documented defaults made explicit (prompt_optimization,
    resolution and aspect_ratio are required by Pixwith), then the job's parameters."""
    return {k: v for k, v in spec.with_defaults(params).items() if v is not None}


def create_body(spec: ModelSpec, job: Job, image_urls: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": job.prompt}
    if image_urls:
        body["image_urls"] = image_urls
    body["model_id"] = spec.endpoint
    body["options"] = options_for(spec, job.params)
    return body


def parse_create_response(doc: Mapping[str, Any]) -> SubmitResult:
    data = as_mapping(doc.get("data"))
    task_id = data.get("task_id")
    if task_id in (None, ""):
        raise UnknownOutcome("task/create answered without a task_id; a task may have been "
                             "created", provider=PROVIDER)
    return SubmitResult(task_id=str(task_id),
                        estimated_seconds=as_float(data.get("estimated_time")))


def output_for(url: str) -> RemoteOutput:
    name = posixpath.basename(urlsplit(url).path) or None
    content_type = mimetypes.guess_type(name)[0] if name else None
    return RemoteOutput(url=url, name=name, content_type=content_type)


def parse_task(data: Mapping[str, Any], task_id: str,
               credits_per_image: float | None) -> TaskStatus:
    """``task/get``'s ``data`` → TaskStatus; credits = price per image × images returned."""
    raw = data.get("status")
    status = as_int(raw)
    urls = [str(u) for u in (data.get("result_urls") or []) if isinstance(u, str) and u]
    outputs = tuple(output_for(u) for u in urls)
    tid = str(data.get("task_id") or task_id)
    provider_status = str(raw) if raw is not None else ""
    if status == STATUS_COMPLETED:
        if not outputs:
            return TaskStatus(tid, TaskState.FAILED, provider_status,
                              error="Pixwith reported completion without any result URL")
        credits = credits_per_image * len(outputs) if credits_per_image is not None else None
        return TaskStatus(tid, TaskState.SUCCEEDED, provider_status, outputs=outputs,
                          credits=credits)
    if status == STATUS_FAILED:
        reason = first(data, "error", "message", "fail_reason", "reason", "error_message")
        return TaskStatus(tid, TaskState.FAILED, provider_status, outputs=outputs,
                          error=str(reason) if reason else "Pixwith reported the task failed")
    if status != STATUS_PROCESSING:
        log.warning("Pixwith task %s: unknown status %r, treated as running", tid, raw)
    return TaskStatus(tid, TaskState.RUNNING, provider_status)


def _open_local(ref: ImageRef) -> BinaryIO:
    assert ref.path is not None
    try:
        return open(ref.path, "rb")  # the caller closes it
    except OSError as exc:
        raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                          provider=PROVIDER) from None


def _only_model() -> ModelSpec | None:
    specs = [s for s in models().values() if s.provider == PROVIDER]
    return specs[0] if len(specs) == 1 else None


class PixwithProvider(HttpProvider):
    """Pixwith over HTTP. ``submit`` uploads local images, then creates the task."""

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
                         timeout=timeout, concurrency=concurrency)
        self._api_key = api_key
        self._task_models: dict[str, ModelSpec] = {}

    # -- plumbing -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Api-Key": self._api_key}

    def _check(self, response: httpx.Response, *, op: str, subject: str) -> dict[str, Any]:
        status = response.status_code
        doc = self.json_body(response, op)
        message = str(doc.get("message") or "") if doc is not None else ""
        if status == 429 or status >= 500 or status == 408:
            if op == "submit" and status in SUBMIT_AMBIGUOUS_HTTP:
                raise UnknownOutcome(f"task/create answered HTTP {status} from a gateway; a "
                                     f"task may have been created", provider=PROVIDER,
                                     http_status=status)
            err = http_status_error(response, PROVIDER, self._secrets,
                                    detail=self._excerpt(message))
            assert err is not None
            raise err
        if doc is not None and "code" in doc and as_int(doc.get("code")) != 1:
            raise error_from_message(as_int(doc.get("code")), self._excerpt(message), op=op,
                                     subject=subject, http_status=status)
        if status >= 400:
            err = http_status_error(response, PROVIDER, self._secrets)
            assert err is not None
            raise err
        if doc is None or "code" not in doc:
            raise self.not_json_error(response, op)
        return doc

    async def _post(self, kind: str, path: str, body: dict[str, Any], *, op: str, subject: str,
                    creates: bool = False) -> dict[str, Any]:
        response = await self.send(kind, "POST", f"{self.base_url}/{path}", json=body,
                                   headers=self._headers(), creates=creates,
                                   what=f"{path} {subject}".strip())
        return self._check(response, op=op, subject=subject)

    # -- reference images -----------------------------------------------------------------

    def check_local_image(self, ref: ImageRef) -> tuple[str, str]:
        """(upload name, content type) of a local reference image Pixwith accepts, or
        JobRejected naming the file and the rule it breaks. Reads only the first bytes."""
        assert ref.path is not None
        try:
            size = os.stat(ref.path).st_size
            with open(ref.path, "rb") as fh:
                head = fh.read(32)
        except OSError as exc:
            raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                              provider=PROVIDER) from None
        if size > MAX_UPLOAD_BYTES:
            raise JobRejected(f"reference image {ref.ref!r} is {size:,} bytes; Pixwith accepts "
                              f"at most {MAX_UPLOAD_BYTES:,} (10 MB)", provider=PROVIDER)
        sniffed = sniff_image(head)
        if sniffed is None or sniffed[0] not in UPLOAD_TYPES:
            found = sniffed[1].upper() if sniffed else "not a recognised image"
            raise JobRejected(f"reference image {ref.ref!r} is {found}; Pixwith accepts JPEG "
                              f"and PNG only — convert it, or give a URL", provider=PROVIDER)
        content_type = sniffed[0]
        name = os.path.basename(ref.path)
        if name.rsplit(".", 1)[-1].lower() not in UPLOAD_TYPES[content_type] or "." not in name:
            name = f"{name}.{UPLOAD_TYPES[content_type][0]}"
        return name, content_type

    async def upload_image(self, ref: ImageRef, name: str, content_type: str) -> str:
        """Upload one checked local image; returns the CDN URL to put in ``image_urls``."""
        assert ref.path is not None
        doc = await self._post("upload", "task/pre_url",
                               {"image_name": name, "content_type": content_type},
                               op="upload", subject=name)
        data = as_mapping(doc.get("data"))
        target = as_mapping(data.get("upload_url"))
        url, image_url = target.get("url"), data.get("image_url")
        fields = target.get("fields") or {}
        if not url or not image_url or not isinstance(fields, Mapping):
            raise ServerError("task/pre_url answered without upload_url.url, fields or "
                              "image_url", provider=PROVIDER)
        with _open_local(ref) as fh:  # streamed in chunks while the form is sent
            # The presigned POST goes to the storage host: no Api-Key header on it.
            response = await self.send(
                "upload", "POST", str(url),
                data={str(k): str(v) for k, v in fields.items()},
                files={"file": (name, fh, content_type)},
                timeout=self.transfer_timeout, what=f"upload of {name}")
        if response.status_code not in UPLOAD_OK:
            raise self._upload_error(response, name)
        return str(image_url)

    def _upload_error(self, response: httpx.Response, name: str) -> ProviderError:
        status = response.status_code
        text = self._excerpt(response.text)
        kw: dict[str, Any] = {"provider": PROVIDER, "http_status": status}
        # Storage answers are XML; a refused or expired presigned form is not a key problem.
        if status in (408, 429) or status >= 500 or "expire" in text.lower():
            return ServerError(f"upload of {name} failed — HTTP {status}: {text}", **kw)
        return JobRejected(f"upload of {name} refused — HTTP {status}: {text}", **kw)

    # -- the Provider interface -----------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        if len(job.images) > MAX_IMAGE_URLS:
            raise JobRejected(f"Pixwith takes at most {MAX_IMAGE_URLS} reference images "
                              f"({len(job.images)} given)", provider=PROVIDER)
        checked: list[tuple[str, str] | None] = []
        for ref in job.images:  # every local file is checked before anything is uploaded
            if ref.url is not None:
                checked.append(None)
            elif ref.path is not None:
                checked.append(self.check_local_image(ref))
            else:
                raise JobRejected(f"reference image {ref.ref!r} has neither a path nor a URL",
                                  provider=PROVIDER)
        image_urls: list[str] = []
        for ref, local in zip(job.images, checked, strict=True):
            if local is None:
                assert ref.url is not None
                image_urls.append(ref.url)
            else:
                image_urls.append(await self.upload_image(ref, *local))
        doc = await self._post("submit", "task/create", create_body(spec, job, image_urls),
                               op="submit", subject=spec.endpoint, creates=True)
        result = parse_create_response(doc)
        self._task_models[result.task_id] = spec
        return result

    def _credits_per_image(self, task_id: str, data: Mapping[str, Any]) -> float | None:
        spec = self._task_models.get(task_id)
        if spec is None and data.get("model_id"):
            spec = by_endpoint(PROVIDER, str(data["model_id"]))
        spec = spec or _only_model()
        return spec.price.credits_per_image if spec is not None else None

    async def poll(self, task_id: str) -> TaskStatus:
        task_id = str(task_id)
        doc = await self._post("poll", "task/get", {"task_id": task_id}, op="poll",
                               subject=task_id)
        data = as_mapping(doc.get("data"))
        return parse_task(data, task_id, self._credits_per_image(task_id, data))

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Pixwith documents no way to stop a task: nothing is sent and
        :class:`~runner.errors.CancelUnsupported` says so (the task runs to its end and is
        billed)."""
        if state.terminal:
            return
        log.info("Pixwith task %s cannot be cancelled (no cancel call exists); it will run to "
                 "completion", task_id)
        raise CancelUnsupported("Pixwith has no call to stop a task: it runs to its end and is "
                                "billed", provider=PROVIDER)

    async def get_credits(self) -> float:
        """The account's credit balance (``task/get_credits``)."""
        doc = await self._post("balance", "task/get_credits", {}, op="balance", subject="")
        data = as_mapping(doc.get("data"))
        credits = as_float(data.get("credits"))
        if credits is None:
            raise ServerError(f"task/get_credits answered without a number: "
                              f"{excerpt(str(data), self._secrets)}", provider=PROVIDER)
        return credits
