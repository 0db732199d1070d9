"""The provider interface: small enough to read at a glance.

A provider turns a :class:`~runner.jobs.Job` into remote calls and remote answers into a
common :class:`TaskStatus`. Each method is one remote call (``submit`` may make a few when
local reference images must be uploaded first) and raises only
:class:`~runner.errors.ProviderError` subclasses, so the executor can tell a fatal answer
from a retryable one, a rejected job, and a submit whose fate is unknown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

import httpx

from runner.jobs import Job


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True, slots=True)
class RemoteOutput:
    """One output image as the provider lists it."""

    url: str
    name: str | None = None
    content_type: str | None = None
    size: int | None = None  # bytes, when the provider says


@dataclass(frozen=True, slots=True)
class SubmitResult:
    task_id: str
    token: str | None = None  # a host's token for push updates, if it has one
    estimated_seconds: float | None = None  # the host's estimate of the task's duration
    # A synchronous host answers the submit with the task's end (its outputs, its cost):
    # the executor journals it with the task id, in one commit, and never polls the task.
    final: TaskStatus | None = None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    task_id: str
    state: TaskState
    provider_status: str = ""  # the provider's own status word or number, for the journal
    outputs: tuple[RemoteOutput, ...] = ()
    cost_usd: float | None = None  # provider-reported USD
    credits: float | None = None  # provider-priced credits
    error: str | None = None  # the provider's own error text
    elapsed_seconds: float | None = None


@runtime_checkable
class Provider(Protocol):
    name: str

    async def submit(self, job: Job) -> SubmitResult:
        """Create the remote task. Raises UnknownOutcome when the request left but no
        answer came back (a task may exist and be billed)."""
        ...

    async def poll(self, task_id: str) -> TaskStatus:
        """Ask where a task stands (idempotent)."""
        ...

    async def cancel(self, task_id: str, state: TaskState) -> None:
        """Stop a remote task (``state``: its last known state, for hosts that stop queued and
        running tasks differently). A host that cannot stop it raises
        :class:`~runner.errors.CancelUnsupported`, never returns as if it had."""
        ...

    def stream(self, url: str) -> AbstractAsyncContextManager[httpx.Response]:
        """Open an output for streaming download (``async with provider.stream(url) as r``)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CompletionPush(Protocol):
    """Optional, for hosts that push a task's end (``ProviderSpec.push_completion``).

    The client subscribes each task itself (right after its submit's answer); the executor
    races :meth:`await_completion` against its polling schedule and polls once when it
    returns True. Where the push fails (no subscription, a refused or dropped channel) the
    task is polled as any other."""

    def pushing(self, task_id: str) -> bool:
        """Whether the host may still push ``task_id``'s end."""
        ...

    async def await_completion(self, task_id: str, within: float) -> bool:
        """Wait up to ``within`` s: True when the host pushed the task's end; False on
        timeout, or at once when no push is expected (:meth:`pushing` is False)."""
        ...

    def forget(self, task_id: str) -> None:
        """The task is no longer followed."""
        ...

    def on_task_progress(self, callback: Callable[[str, float], None] | None) -> None:
        """Call ``callback(task_id, percent)`` for the progress the host pushes."""
        ...


async def iter_bytes(response: httpx.Response, chunk: int = 1 << 16) -> AsyncIterator[bytes]:
    async for block in response.aiter_bytes(chunk):
        yield block
