"""Wiro client: Seedream 3.0, 4.0 and 4.5 at ``https://api.wiro.ai/v1``.

Wire facts (docs/providers.md has the whole story):

* every request is signed: ``x-api-key``, ``x-nonce`` and ``x-signature`` =
  hex(HMAC-SHA256(key=API_KEY, message=API_SECRET + NONCE)), with a fresh nonce each time;
* ``POST Run/{owner}/{slug}`` as multipart/form-data: repeated ``inputImage`` parts (files or
  URL strings, in the manifest's order), ``prompt`` and every parameter as a string;
* ``POST Task/Detail`` ``{"taskid"}``; success only on ``task_postprocess_end`` with
  ``pexit == "0"`` (or, where ``pexit`` is absent, with outputs), failure on
  ``task_postprocess_end`` with any other ``pexit``, and on the status ``task_error`` (a
  task that failed before its model ran);
* ``POST Task/Cancel`` for queued tasks, ``Task/Kill`` for running ones;
* errors: ``{"result": false, "errors": [{"code", "message"}]}``, mostly with HTTP 200;
* the websocket (``wss://socket.wiro.ai/v1``, ``WIRO_SOCKET_URL``): each task is subscribed
  right after its Run answer with ``{"type": "task_info", "tasktoken": socketaccesstoken}``;
  ``task_postprocess_end`` or ``task_cancel`` ends the wait, then one Task/Detail reads
  ``pexit``, ``totalcost`` and the outputs (the socket's frame shows no ``pexit``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from decimal import Decimal
from typing import Any, BinaryIO

import httpx

from runner.errors import (
    AuthError,
    ConcurrencyLimited,
    InsufficientBalance,
    JobRejected,
    ProviderError,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import ImageRef, Job
from runner.media import sniff_image
from runner.providers.base import RemoteOutput, SubmitResult, TaskState, TaskStatus
from runner.providers.http import (
    USER_AGENT,
    HttpProvider,
    as_float,
    as_int,
    http_status_error,
)
from runner.providers.push import PushChannel, PushEvent

log = logging.getLogger(__name__)

PROVIDER = "wiro"

QUEUED_STATUSES = frozenset({"task_queue", "task_accept", "task_assign"})
# "task_error" means two different things (PROVIDERS.md, "task_error means two different
# things"; sources: Wiro's MCP server documentation, get_task: "a live WebSocket event with
# that name is an interim stderr log, while `status: "task_error"` returned by Task/Detail
# represents a fatal pre-execution database state and is terminal"; and Wiro's official
# client, WiroClient in wiroai/Wiro-MCP, whose TERMINAL_STATUSES are task_postprocess_end,
# task_cancel and task_error). From Task/Detail (parse_task) the word has the second meaning:
# the task failed before its model ran, will never reach task_postprocess_end, and is failed
# at once (reason: its debugerror). On the socket (parse_socket_frame) it is stderr: the wait
# goes on.
TASK_ERROR_STATUS = "task_error"
# task_error_full stays a running status. On the socket it is "the complete accumulated
# stderr log, sent once after the model process finishes" (Wiro's tasks.md), i.e. before
# task_end and post-processing; PROVIDERS.md lists it among the running statuses also seen
# in Task/Detail; the MCP documentation's terminal meaning is stated for task_error alone, and
# WiroClient counts task_error_full as running. Stderr output does not make a failure (the
# task may still succeed: Wiro's task docs), so the verdict waits for pexit at
# task_postprocess_end, as for any other stage of a run.
STDERR_STATUSES = frozenset({"task_error_full"})
RUNNING_STATUSES = frozenset({
    "task_preprocess_start", "task_preprocess_end", "task_start", "task_output",
    "task_output_full", "task_end", "task_postprocess_start",
}) | STDERR_STATUSES
SUCCESS_STATUS = "task_postprocess_end"
CANCEL_STATUS = "task_cancel"

#: HTTP 504 Gateway Timeout: a proxy gave up waiting for the API, which may still have
#: created the task. On a submit this is an unknown outcome, not a plain server error.
SUBMIT_AMBIGUOUS_HTTP = frozenset({504})

#: Where Wiro pushes task events (Wiro-Docs, websocket.md); ``WIRO_SOCKET_URL`` overrides it.
DEFAULT_SOCKET_URL = "wss://socket.wiro.ai/v1"
#: Socket frames that end the wait (websocket.md: task_postprocess_end is "the final event";
#: task_cancel on cancel or kill). task_end comes *before* post-processing: not an end.
SOCKET_END_TYPES = frozenset({SUCCESS_STATUS, CANCEL_STATUS})


# -- signing (pure) ---------------------------------------------------------------------------

def sign(api_key: str, api_secret: str, nonce: str) -> str:
    """hex(HMAC-SHA256(key=API_KEY, message=API_SECRET + NONCE)), as Wiro documents it."""
    return hmac.new(api_key.encode("utf-8"), (api_secret + nonce).encode("utf-8"),
                    hashlib.sha256).hexdigest()


class NonceSource:
    """Strictly increasing integer nonces: unix milliseconds, bumped past the last one.

    ``max(now_ms, last + 1)`` under a lock, so no two requests of this process ever share a
    nonce, however many run at once and however the clock moves."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(int(self._clock() * 1000), self._last + 1)
            return self._last


#: One nonce sequence for the whole process: two clients built in the same millisecond (a
#: run and a cancel, two providers objects in one test) still never send the same nonce.
PROCESS_NONCES = NonceSource()


class WiroAuth(httpx.Auth):
    """Adds Wiro's signature headers to each request it is given (sans-I/O)."""

    def __init__(self, api_key: str, api_secret: str, nonces: NonceSource | None = None) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self.nonces = nonces or PROCESS_NONCES

    def __repr__(self) -> str:
        return "WiroAuth(api_key=***, api_secret=***)"

    def headers(self) -> dict[str, str]:
        nonce = str(self.nonces.next())
        return {"x-api-key": self._api_key, "x-nonce": nonce,
                "x-signature": sign(self._api_key, self._api_secret, nonce)}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.headers())
        yield request


# -- the wire form of a job (pure) ------------------------------------------------------------

def wire_value(name: str, value: Any) -> str:
    """A parameter as a form field: booleans ``"true"``/``"false"``, numbers in plain decimal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise JobRejected(f"parameter {name!r}: {value} is not a finite number",
                              provider=PROVIDER)
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return value
    raise JobRejected(f"parameter {name!r}: a {type(value).__name__} cannot be sent as a form "
                      f"field (strings, numbers and booleans only)", provider=PROVIDER)


def form_fields(prompt: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``prompt`` and every parameter (None means "leave it out") as form fields."""
    fields = [("prompt", prompt)]
    fields += [(name, wire_value(name, value)) for name, value in params.items()
               if value is not None]
    return fields


def open_image(ref: ImageRef, stack: ExitStack) -> tuple[str, BinaryIO, str]:
    """(file name, open file positioned at 0, content type from magic bytes) of a local image.

    The file is read in chunks while the request is sent and closed when ``stack`` is."""
    assert ref.path is not None
    try:
        fh: BinaryIO = stack.enter_context(open(ref.path, "rb"))  # noqa: SIM115
    except OSError as exc:
        raise JobRejected(f"reference image {ref.ref!r} cannot be read: {exc.strerror}",
                          provider=PROVIDER) from None
    head = fh.read(32)
    fh.seek(0)
    sniffed = sniff_image(head)
    content_type = sniffed[0] if sniffed else "application/octet-stream"
    return os.path.basename(ref.path), fh, content_type


def multipart_parts(job: Job, stack: ExitStack) -> list[tuple[str, Any]]:
    """The Run request's parts for httpx ``files=``: every reference image as an ``inputImage``
    part in the job's order (a file upload, or a URL as a plain string field), then the prompt
    and parameters. Everything goes in one list so httpx keeps that order and always sends
    multipart/form-data."""
    parts: list[tuple[str, Any]] = []
    for ref in job.images:
        if ref.url is not None:
            parts.append(("inputImage", (None, ref.url)))
        elif ref.path is not None:
            parts.append(("inputImage", open_image(ref, stack)))
        else:
            raise JobRejected(f"reference image {ref.ref!r} has neither a path nor a URL",
                              provider=PROVIDER)
    parts += [(name, (None, value)) for name, value in form_fields(job.prompt, job.params)]
    return parts


# -- answers (pure) ---------------------------------------------------------------------------

# Code 0 covers both validation failures (don't retry) and server-side failures (retry).
# Wiro's messages are the only way to tell them apart; these word lists are a heuristic kept
# here alone. Authentication failures also come as code 0 (with HTTP 401, usually).
_SERVER_WORDS = re.compile(
    r"server|internal|try again|temporar|unavailable|timed? ?out|timeout|overload|busy|"
    r"database|maintenance|unexpected error", re.I)
_AUTH_WORDS = re.compile(
    r"authori[sz]ation is not|signature|x-nonce|api[- ]?key|not allowed|bearer token", re.I)


def looks_like_server_error(message: str) -> bool:
    return bool(_SERVER_WORDS.search(message))


def looks_like_auth_error(message: str) -> bool:
    return bool(_AUTH_WORDS.search(message))


def envelope_errors(doc: Mapping[str, Any]) -> list[tuple[int | None, str]]:
    """(code, message) of each error in a Wiro envelope; [] when it reports success."""
    errors = doc.get("errors") or []
    found: list[tuple[int | None, str]] = []
    if isinstance(errors, list):
        for err in errors:
            if isinstance(err, Mapping):
                found.append((as_int(err.get("code")), str(err.get("message") or "").strip()))
            else:
                found.append((None, str(err)))
    if doc.get("result") is False and not found:
        found.append((None, "request failed (no error detail given)"))
    return found


def error_from_code(code: int | None, message: str, *, op: str, subject: str,
                    http_status: int | None = None) -> ProviderError:
    """The typed error for one Wiro ``{"code", "message"}``.

    ``op`` is submit/poll/cancel; ``subject`` the model endpoint or the task id."""
    kw: dict[str, Any] = {"provider": PROVIDER, "code": code, "http_status": http_status}
    text = message or "no message"
    if http_status in (401, 403) or code in (98, 99):
        return AuthError(f"Wiro refused the credentials: {text}", **kw)
    if code == 96:
        return ConcurrencyLimited(f"concurrent task limit reached: {text}", **kw)
    if code == 97:
        return InsufficientBalance(f"insufficient balance: {text}", **kw)
    if code == 1:
        if op == "submit":
            return JobRejected(f"Wiro has no accessible model {subject!r}: {text}", **kw)
        return JobRejected(f"Wiro has no task {subject!r} ({op}): {text}", **kw)
    if code == 0 and looks_like_auth_error(text):
        return AuthError(f"Wiro refused the credentials: {text}", **kw)
    if code == 0 and looks_like_server_error(text):
        return ServerError(f"Wiro server error: {text}", **kw)
    return JobRejected(f"Wiro refused the request: {text}", **kw)


def parse_run_response(doc: Mapping[str, Any]) -> SubmitResult:
    task_id = doc.get("taskid")
    if task_id in (None, ""):
        raise UnknownOutcome("Run answered without a taskid; a task may have been created",
                             provider=PROVIDER)
    token = doc.get("socketaccesstoken")
    return SubmitResult(task_id=str(task_id), token=str(token) if token else None)


def parse_outputs(items: Any) -> tuple[RemoteOutput, ...]:
    if not isinstance(items, list):
        return ()
    outputs = []
    for item in items:
        if isinstance(item, Mapping) and item.get("url"):
            outputs.append(RemoteOutput(url=str(item["url"]),
                                        name=str(item["name"]) if item.get("name") else None,
                                        content_type=item.get("contenttype") or None,
                                        size=as_int(item.get("size"))))
    return tuple(outputs)


def task_error_reason(task: Mapping[str, Any]) -> str:
    """Why a task ended in ``task_error``: its ``debugerror``, else any error text the entry
    carries (``error``, ``message``), else a plain statement of what happened."""
    for name in ("debugerror", "error", "message"):
        text = task.get(name)
        if isinstance(text, str) and text.strip():
            return text.strip()
    return "Wiro ended the task with status task_error before its model ran (no error text)"


def parse_task(task: Mapping[str, Any]) -> TaskStatus:
    """One ``tasklist`` entry → TaskStatus: success only at task_postprocess_end (see below)."""
    status = str(task.get("status") or "")
    pexit = task.get("pexit")
    debugerror = str(task.get("debugerror") or "").strip()
    outputs = parse_outputs(task.get("outputs"))
    error: str | None = None
    if status == SUCCESS_STATUS:
        code = None if pexit is None else str(pexit).strip()
        # Wiro's task documentation: "check pexit or outputs (or both)"; pexit "0" is success,
        # any other value an error; its own Task/Detail examples sometimes omit pexit. So an
        # absent pexit decides by outputs (present: success; empty: failure), and an explicit
        # non-zero (or empty) pexit is always a failure.
        if code == "0" or (code is None and outputs):
            state = TaskState.SUCCEEDED
        else:
            state = TaskState.FAILED
            if not code:
                error = debugerror or "task ended with no exit code (pexit) and no outputs"
            else:
                error = debugerror or f"exit code {code}"
    elif status == TASK_ERROR_STATUS:
        # terminal: failed before the model ran (see TASK_ERROR_STATUS); the cost is
        # whatever totalcost says (Wiro bills only successes), None when it is absent
        state = TaskState.FAILED
        error = task_error_reason(task)
    elif status == CANCEL_STATUS:
        state = TaskState.CANCELLED
    elif status in QUEUED_STATUSES:
        state = TaskState.QUEUED
    else:
        state = TaskState.RUNNING
        if status not in RUNNING_STATUSES:
            log.warning("Wiro task %s: unknown status %r, treated as running",
                        task.get("id"), status)
    # the status word as Wiro sent it; at the end, with the exit code that decided it
    raw = f"{status} pexit={pexit}" if status == SUCCESS_STATUS and pexit is not None else status
    return TaskStatus(
        task_id=str(task.get("id") or ""),
        state=state,
        provider_status=raw,
        outputs=outputs,
        cost_usd=as_float(task.get("totalcost")),
        error=error,
        elapsed_seconds=as_float(task.get("elapsedseconds")),
    )


def parse_task_detail(doc: Mapping[str, Any], task_id: str) -> TaskStatus:
    tasks = [t for t in (doc.get("tasklist") or []) if isinstance(t, Mapping)]
    if not tasks:
        raise JobRejected(f"Wiro has no task {task_id!r} (empty task list)", provider=PROVIDER,
                          code=1)
    task = next((t for t in tasks if str(t.get("id")) == str(task_id)), tasks[0])
    status = parse_task(task)
    return status if status.task_id else replace(status, task_id=str(task_id))


# -- the websocket (pure) --------------------------------------------------------------------

def socket_frame(token: str) -> str:
    """The subscription frame for one task (websocket.md, "Register")."""
    return json.dumps({"type": "task_info", "tasktoken": token})


#: The ``type`` of a task_output frame's message that carries a percentage
PROGRESS_MESSAGE = "progressGenerate"
#: Words one of which a frame that ends a wait or carries progress always holds in its text
_FRAME_WORDS = (*sorted(SOCKET_END_TYPES), PROGRESS_MESSAGE)


def socket_frame_matters(text: str) -> bool:
    """Whether a frame's text may be an end or a progress (:func:`parse_socket_frame`); the
    others — most of a task's dozen stage changes — are not decoded. JSON never needs to
    escape these ASCII words, so such a frame holds one of them as it is; were one ever
    missed, the task would be polled when its push stays silent, as for a lost socket."""
    return any(word in text for word in _FRAME_WORDS)


def parse_socket_frame(doc: Mapping[str, Any]) -> PushEvent | None:
    """One frame ``{"type", "id", "tasktoken", "message", "result"}`` → a PushEvent.

    ``task_postprocess_end`` / ``task_cancel`` end the wait; a ``task_output`` whose message
    is a ``progressGenerate`` object carries a percentage (a string); ``task_error`` on the
    socket is an interim stderr line, like every other frame mere activity."""
    token = doc.get("tasktoken")
    kind = doc.get("type")
    if not isinstance(token, str) or not token or not isinstance(kind, str):
        return None
    if kind in SOCKET_END_TYPES:
        return PushEvent(token, "end")
    message = doc.get("message")
    if kind == "task_output" and isinstance(message, Mapping) \
            and message.get("type") == PROGRESS_MESSAGE:
        percent = as_float(message.get("percentage"))
        if percent is not None:
            return PushEvent(token, "progress", max(0.0, min(100.0, percent)))
    return PushEvent(token, "activity")


# -- the client -------------------------------------------------------------------------------

class WiroProvider(HttpProvider):
    """Wiro over HTTP. ``submit`` creates a task; ``poll``/``cancel`` are safe to repeat."""

    name = PROVIDER
    can_cancel = True

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        api_secret: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        concurrency: int = 8,
        nonces: NonceSource | None = None,
        socket_url: str | None = None,
    ) -> None:
        super().__init__(base_url=base_url, secrets=(api_key, api_secret), transport=transport,
                         timeout=timeout, concurrency=concurrency)
        self.auth = WiroAuth(api_key, api_secret, nonces)
        # None: completion is polled only (realtime off, or no socket for this endpoint)
        self.push = PushChannel(socket_url, frame=socket_frame, parse=parse_socket_frame,
                                wanted=socket_frame_matters,
                                user_agent=USER_AGENT) if socket_url else None

    # -- plumbing -------------------------------------------------------------------------

    def _check(self, response: httpx.Response, *, op: str, subject: str) -> dict[str, Any]:
        """The JSON object of a successful answer, or the typed error the answer means."""
        status = response.status_code
        doc = self.json_body(response, op)
        errors = envelope_errors(doc) if doc is not None else []
        first_error = errors[0] if errors else None
        if status == 429 or status >= 500 or status == 408:
            if op == "submit" and status in SUBMIT_AMBIGUOUS_HTTP:
                raise UnknownOutcome(f"Run answered HTTP {status} from a gateway; a task may "
                                     f"have been created", provider=PROVIDER, http_status=status)
            detail = first_error[1] if first_error else ""
            err = http_status_error(response, PROVIDER, self._secrets,
                                    detail=self._excerpt(detail))
            assert err is not None
            raise err
        if first_error is not None:
            code, message = first_error
            raise error_from_code(code, self._excerpt(message), op=op, subject=subject,
                                  http_status=status)
        if status >= 400:
            err = http_status_error(response, PROVIDER, self._secrets)
            assert err is not None
            raise err
        if doc is None:
            raise self.not_json_error(response, op)
        return doc

    async def _post_json(self, kind: str, path: str, body: dict[str, Any], *, op: str,
                         subject: str) -> dict[str, Any]:
        response = await self.send(kind, "POST", f"{self.base_url}/{path}", json=body,
                                   auth=self.auth, what=f"{path} {subject}")
        return self._check(response, op=op, subject=subject)

    # -- the Provider interface -----------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        spec = self.spec_for(job)
        url = f"{self.base_url}/Run/{spec.endpoint}"
        with ExitStack() as stack:
            parts = multipart_parts(job, stack)
            body: dict[str, Any] = {"files": parts}
            if not any(ref.path is not None for ref in job.images):
                # Text fields only: the form in one piece, so it leaves in one write rather
                # than one per part (each a system call; most of a submit's CPU otherwise).
                form = httpx.Request("POST", self.api_url(url), files=parts)
                body = {"content": form.read(),
                        "headers": {"Content-Type": form.headers["Content-Type"]}}
            response = await self.send("submit", "POST", url, auth=self.auth,
                                       creates=True, what=f"Run {spec.endpoint}",
                                       timeout=self.transfer_timeout if job.images
                                       else self.timeout, **body)
        doc = self._check(response, op="submit", subject=spec.endpoint)
        result = parse_run_response(doc)
        if self.push is not None and result.token:
            self.push.subscribe(result.task_id, result.token)
        return result

    async def poll(self, task_id: str) -> TaskStatus:
        doc = await self._post_json("poll", "Task/Detail", {"taskid": str(task_id)}, op="poll",
                                    subject=str(task_id))
        status = parse_task_detail(doc, str(task_id))
        if self.push is not None and not status.state.terminal \
                and not self.push.pushing(status.task_id):
            # a task followed again (resume), or lost with a dropped socket: subscribe it
            # (again) with the token Task/Detail lists, so its end is pushed from now on
            tasks = doc.get("tasklist")
            entry = tasks[0] if isinstance(tasks, list) and tasks else None
            tok = entry.get("socketaccesstoken") if isinstance(entry, Mapping) else None
            if isinstance(tok, str) and tok:
                self.push.subscribe(status.task_id, tok)
        return status

    # -- completion pushed (runner.providers.base.CompletionPush) -----------------------------

    def pushing(self, task_id: str) -> bool:
        return self.push is not None and self.push.pushing(str(task_id))

    async def await_completion(self, task_id: str, within: float) -> bool:
        if self.push is None:
            return False
        return await self.push.wait_end(str(task_id), within)

    def forget(self, task_id: str) -> None:
        if self.push is not None:
            self.push.forget(str(task_id))

    def on_task_progress(self, callback: Callable[[str, float], None] | None) -> None:
        if self.push is not None:
            self.push.on_progress = callback

    async def aclose(self) -> None:
        if self.push is not None:
            await self.push.aclose()
        await super().aclose()

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Cancel a queued task, kill a running one; nothing to do for a finished one.

        Wiro cancels only tasks still in the queue ("Task is not in a cancellable state",
        code 1, otherwise); when Cancel refuses, the task has moved on, so Kill follows."""
        if state.terminal:
            return
        task_id = str(task_id)
        if state is TaskState.QUEUED:
            try:
                await self._post_json("cancel", "Task/Cancel", {"taskid": task_id}, op="cancel",
                                      subject=task_id)
                return
            except JobRejected as exc:
                log.info("Wiro task %s: Cancel refused (%s); trying Kill", task_id, exc.message)
        await self._post_json("cancel", "Task/Kill", {"taskid": task_id}, op="cancel",
                              subject=task_id)


def wiro_statuses() -> Iterable[str]:
    """Every status word this client knows, for documentation and tests."""
    return sorted(QUEUED_STATUSES | RUNNING_STATUSES
                  | {SUCCESS_STATUS, CANCEL_STATUS, TASK_ERROR_STATUS})
