"""Demo Images' wire format, both ways, with no I/O: request bodies, answers → seedbatch's
types, and HTTP answers → :mod:`runner.errors` types. The README shows every shape.

Never pay twice: ``POST /v1/images`` creates an image job only when it answers 202. Every
other answer the API itself gives (4xx, 5xx) means nothing was created, so those errors
are safe to retry or fail on. Two answers leave the job's existence unknown — a 504 (the
gateway gave up waiting for the API, which may have accepted the job) and a 2xx whose body
names no job — and become :class:`~runner.errors.UnknownOutcome`, which seedbatch never
resubmits on its own. A lost answer (connection dropped after sending) is the same; the
shared plumbing (:mod:`runner.providers.http`) raises that one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from runner.errors import (
    AuthError,
    ConcurrencyLimited,
    InsufficientBalance,
    JobRejected,
    ProviderError,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import Job
from runner.providers.base import RemoteOutput, SubmitResult, TaskState, TaskStatus
from runner.providers.http import as_float, as_mapping, excerpt, parse_retry_after
from runner.spec import ModelSpec

log = logging.getLogger(__name__)

PROVIDER = "demo"
#: Demo Images' status words → seedbatch's task states.
STATES: Mapping[str, TaskState] = {
    "queued": TaskState.QUEUED,
    "running": TaskState.RUNNING,
    "succeeded": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "canceled": TaskState.CANCELLED,
}
#: A submit answered with one of these may have created an image job.
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})
#: The 429 error code that means "too many image jobs in flight", not "too many requests".
BUSY_CODE = "too_many_active_tasks"


# -- requests ---------------------------------------------------------------------------------

def create_body(spec: ModelSpec, job: Job) -> dict[str, Any]:
    """``POST /v1/images``: the API's model name, the prompt, then every parameter with the
    documented defaults made explicit (so what was asked is on the wire, not implied)."""
    return {"model": spec.endpoint, "prompt": job.prompt, **spec.with_defaults(job.params)}


# -- answers ----------------------------------------------------------------------------------

def parse_created(doc: Mapping[str, Any] | None) -> SubmitResult:
    """The 202 answer of ``POST /v1/images``. Without an id the job may exist all the same:
    UnknownOutcome, never an error that invites a resubmit."""
    job_id = doc.get("id") if doc is not None else None
    if doc is None or not isinstance(job_id, str) or not job_id:
        raise UnknownOutcome("POST /v1/images was accepted but its answer names no image job; "
                             "one may have been created", provider=PROVIDER)
    return SubmitResult(task_id=job_id, estimated_seconds=as_float(doc.get("eta_seconds")))


def output_of(item: Any) -> RemoteOutput | None:
    entry = as_mapping(item)
    url = entry.get("url")
    if not isinstance(url, str) or not url:
        return None
    name = url.rsplit("/", 1)[-1].split("?", 1)[0] or None
    content_type = entry.get("content_type")
    size = entry.get("bytes")
    return RemoteOutput(url=url, name=name,
                        content_type=content_type if isinstance(content_type, str) else None,
                        size=size if isinstance(size, int) and not isinstance(size, bool)
                        else None)


def parse_image(doc: Mapping[str, Any], task_id: str) -> TaskStatus:
    """``GET /v1/images/{id}`` → TaskStatus. A success without outputs is a failure (there
    is nothing to download); an unknown status word is taken for ``running``."""
    word = doc.get("status")
    raw = word if isinstance(word, str) else ""
    tid = str(doc.get("id") or task_id)
    state = STATES.get(raw)
    if state is None:
        log.warning("Demo Images image %s: unknown status %r, treated as running", tid, word)
        state = TaskState.RUNNING
    listed = doc.get("outputs")
    found = (output_of(item) for item in (listed if isinstance(listed, list) else ()))
    outputs = tuple(o for o in found if o is not None)
    cost = as_float(doc.get("cost_usd"))
    error = as_mapping(doc.get("error"))
    reason = error.get("message") or error.get("code")
    if state is TaskState.SUCCEEDED and not outputs:
        return TaskStatus(tid, TaskState.FAILED, raw, cost_usd=cost,
                          error="Demo Images reported success without any output")
    if state is TaskState.FAILED:
        return TaskStatus(tid, state, raw, outputs=outputs, cost_usd=cost,
                          error=str(reason) if reason else "Demo Images reported the job failed")
    if state is TaskState.CANCELLED:
        return TaskStatus(tid, state, raw, cost_usd=cost, error=str(reason) if reason else None)
    return TaskStatus(tid, state, raw, outputs=outputs if state.terminal else (), cost_usd=cost)


# -- errors -----------------------------------------------------------------------------------

def error_envelope(response: httpx.Response) -> tuple[str, str, str]:
    """(code, message, param) of an ``{"error": {...}}`` answer; empty strings when the body
    is something else (a gateway's HTML page, plain text)."""
    try:
        doc = response.json()
    except ValueError:
        return "", "", ""
    error = as_mapping(as_mapping(doc).get("error"))
    code, message, param = (str(error.get(k) or "") for k in ("code", "message", "param"))
    return code, message, param


def error_for(response: httpx.Response, *, op: str, subject: str = "",
              secrets: tuple[str, ...] = ()) -> ProviderError:
    """The typed error for an answer of 400 or more to ``op`` (``submit``, ``poll``,
    ``cancel``); ``subject`` names the image job or model it was about."""
    status = response.status_code
    code, message, param = error_envelope(response)
    if not message:
        message = excerpt(response.text, secrets) if response.is_closed else ""
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    kw: dict[str, Any] = {"provider": PROVIDER, "http_status": status}
    about = f" {subject}" if subject else ""
    if status in (401, 403):
        return AuthError(f"Demo Images refused the API key — {detail}", **kw)
    if status == 402:
        return InsufficientBalance(f"Demo Images balance too low — {detail}", **kw)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if code == BUSY_CODE:
            return ConcurrencyLimited(f"Demo Images is busy with this account's image jobs — "
                                      f"{detail}", retry_after=retry_after, **kw)
        return RateLimited(f"Demo Images rate limit — {detail}", retry_after=retry_after, **kw)
    if op == "submit" and status in SUBMIT_AMBIGUOUS_HTTP:
        return UnknownOutcome(f"POST /v1/images answered {detail} from the gateway; an image "
                              f"job may have been created", **kw)
    if status == 408 or status >= 500:
        return ServerError(f"Demo Images server error — {detail}", **kw)
    if op == "poll" and status == 404:
        return JobRejected(f"Demo Images has no image job{about} — {detail}", **kw)
    if op == "cancel" and status == 409:
        return JobRejected(f"image job{about} can no longer be canceled (it has ended) — "
                           f"{detail}", **kw)
    where = f" (parameter {param})" if param else ""
    return JobRejected(f"Demo Images refused the request{where} — {detail}", **kw)
