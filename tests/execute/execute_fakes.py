"""An in-memory provider for scheduling and journal tests: latency, faults, a billing ledger.

It implements the Provider protocol on the running asyncio loop's clock. Faults are scripted
per call kind with :meth:`FakeProvider.script` (a list consumed one per call, ``None`` meaning
"answer normally") or drawn at random with :attr:`FakeProvider.rates`. Every created task,
every bill and every call (with its time) is recorded so tests can assert on them.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from runner.errors import (
    CancelUnsupported,
    ConcurrencyLimited,
    JobRejected,
    RateLimited,
    ServerError,
    UnknownOutcome,
)
from runner.jobs import Budget, Estimate, Job, Limits, Plan, job_key
from runner.providers.base import RemoteOutput, SubmitResult, TaskState, TaskStatus


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


@dataclass
class FakeTask:
    id: str
    job: Job
    created: float
    duration: float
    fails: bool = False
    outcome: str | None = None
    cancelled: bool = False


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes, chunk: int, cut_at: int | None) -> None:
        self.data, self.chunk, self.cut_at = data, chunk, cut_at

    async def __aiter__(self) -> AsyncIterator[bytes]:
        end = len(self.data) if self.cut_at is None else self.cut_at
        for i in range(0, end, self.chunk):
            yield self.data[i:min(i + self.chunk, end)]
            await asyncio.sleep(0)
        if self.cut_at is not None:
            raise ServerError("connection closed mid-body", provider="fake")


@dataclass
class FakeProvider:
    name: str = "wiro"
    latency: float = 0.05
    concurrency: int | None = None  # remote limit → ConcurrencyLimited beyond it
    elapsed_reported: bool = True
    announce: float | None = None  # estimated_seconds returned on submit (Pixwith-like)
    output_format: str = "PNG"
    outputs_per_task: int = 1
    cost_usd: float | None = 0.03
    credits: float | None = None
    fail_prompts: set[str] = field(default_factory=set)
    slow_prompts: dict[str, float] = field(default_factory=dict)  # prompt → its own latency
    rates: dict[str, float] = field(default_factory=dict)  # e.g. {"submit_5xx": 0.2}
    seed: int = 1
    chunk: int = 4096
    # recorded
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    created: Counter[str] = field(default_factory=Counter)  # job key → tasks created
    billed: Counter[str] = field(default_factory=Counter)  # job key → tasks billed
    calls: list[tuple[str, float]] = field(default_factory=list)
    requests_sent: Counter[str] = field(default_factory=Counter)
    cancels: list[tuple[str, TaskState]] = field(default_factory=list)
    peak_remote: int = 0
    rejected_96: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    download_cuts: dict[str, int] = field(default_factory=dict)  # url → cuts left
    wrong_length: set[str] = field(default_factory=set)
    submit_gate: asyncio.Event | None = None  # when set, submits wait for it
    on_submit: Callable[[Job], None] | None = None
    cannot_cancel: bool = False  # like a host with no cancel call: CancelUnsupported

    def __post_init__(self) -> None:
        self._scripts: dict[str, list[Any]] = {}
        self._rng = random.Random(self.seed)
        self._next = 1000

    # -- scripting ------------------------------------------------------------------------

    def script(self, kind: str, *items: Any) -> None:
        """Queue outcomes for the next calls of ``kind`` (submit, poll, cancel, download):
        an exception instance to raise, "lost" (submit: create the task, then lose the
        answer), or None (answer normally)."""
        self._scripts.setdefault(kind, []).extend(items)

    def _scripted(self, kind: str) -> Any:
        queue = self._scripts.get(kind)
        if queue:
            return queue.pop(0)
        for fault, rate in self.rates.items():
            k, _, what = fault.partition("_")
            if k == kind and self._rng.random() < rate:
                return {"5xx": ServerError("HTTP 503", provider=self.name, http_status=503),
                        "429": RateLimited("HTTP 429", provider=self.name, http_status=429),
                        "lost": "lost",
                        "drop": ServerError("dropped", provider=self.name)}[what]
        return None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _settle(self) -> None:
        now = self._now()
        for task in self.tasks.values():
            if task.outcome is None and now >= task.created + task.duration:
                task.outcome = "failed" if task.fails else "succeeded"
                if not task.fails:
                    self.billed[task.job.key] += 1

    def active(self) -> int:
        self._settle()
        return sum(1 for t in self.tasks.values() if t.outcome is None)

    # -- the Provider protocol ------------------------------------------------------------

    async def submit(self, job: Job) -> SubmitResult:
        self.calls.append(("submit", self._now()))
        self.requests_sent["submit"] += 1
        if self.on_submit is not None:
            self.on_submit(job)
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        await asyncio.sleep(0)
        fault = self._scripted("submit")
        if isinstance(fault, Exception):
            raise fault
        if self.concurrency is not None and self.active() >= self.concurrency:
            self.rejected_96 += 1
            raise ConcurrencyLimited("concurrent task limit reached", provider=self.name,
                                     code=96)
        self._next += 1
        task = FakeTask(str(self._next), job, self._now(),
                        self.slow_prompts.get(job.prompt, self.latency),
                        fails=job.prompt in self.fail_prompts)
        self.tasks[task.id] = task
        self.created[job.key] += 1
        self.peak_remote = max(self.peak_remote, self.active())
        if fault == "lost":
            raise UnknownOutcome("answer lost", provider=self.name)
        return SubmitResult(task.id, estimated_seconds=self.announce)

    async def poll(self, task_id: str) -> TaskStatus:
        self.calls.append(("poll", self._now()))
        self.requests_sent["poll"] += 1
        await asyncio.sleep(0)
        fault = self._scripted("poll")
        if isinstance(fault, Exception):
            raise fault
        task = self.tasks.get(task_id)
        if task is None:
            raise JobRejected(f"no task {task_id}", provider=self.name, code=1)
        self._settle()
        elapsed = min(self._now(), task.created + task.duration) - task.created
        if task.cancelled:
            return TaskStatus(task_id, TaskState.CANCELLED, "task_cancel")
        if task.outcome is None:
            state = TaskState.RUNNING if self._now() - task.created > task.duration / 3 \
                else TaskState.QUEUED
            return TaskStatus(task_id, state, f"fake_{state}",
                              elapsed_seconds=elapsed if self.elapsed_reported else None)
        if task.outcome == "failed":
            return TaskStatus(task_id, TaskState.FAILED, "task_postprocess_end pexit=1",
                              error="model crashed",
                              elapsed_seconds=elapsed if self.elapsed_reported else None)
        outputs = []
        for i in range(self.outputs_per_task):
            url = f"https://cdn.fake/{task_id}/{i}"
            if url not in self.files:
                self.files[url] = image_bytes(self.output_format, (8 + i, 6))
            outputs.append(RemoteOutput(url=url, name=f"{i}.png", size=len(self.files[url])))
        return TaskStatus(task_id, TaskState.SUCCEEDED, "task_postprocess_end pexit=0",
                          outputs=tuple(outputs), cost_usd=self.cost_usd, credits=self.credits,
                          elapsed_seconds=elapsed if self.elapsed_reported else None)

    async def cancel(self, task_id: str, state: TaskState) -> None:
        self.calls.append(("cancel", self._now()))
        self.requests_sent["cancel"] += 1
        fault = self._scripted("cancel")
        if isinstance(fault, Exception):
            raise fault
        if self.cannot_cancel:
            raise CancelUnsupported("no call to stop a task", provider=self.name)
        task = self.tasks[task_id]
        self._settle()
        if task.outcome is not None:
            raise JobRejected("task is not in a cancellable state", provider=self.name)
        task.cancelled = True
        task.outcome = "cancelled"
        self.cancels.append((task_id, state))

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        self.requests_sent["download"] += 1
        fault = self._scripted("download")
        if isinstance(fault, Exception):
            raise fault
        data = self.files[url]
        cut = None
        if self.download_cuts.get(url, 0) > 0:
            self.download_cuts[url] -= 1
            cut = len(data) // 2
        headers = {"content-length": str(len(data) + (7 if url in self.wrong_length else 0))}
        yield httpx.Response(200, headers=headers, stream=_Stream(data, self.chunk, cut))

    async def aclose(self) -> None:
        pass

    # -- helpers for assertions ---------------------------------------------------------------

    def times(self, kind: str | None = None) -> list[float]:
        return [t for k, t in self.calls if kind is None or k == kind]


def make_job(name: str, *, provider: str = "wiro", model: str = "wiro/seedream-v4",
             prompt: str | None = None, usd: float = 0.03, credits: float = 0.0,
             images: int = 1, index: int = 0) -> Job:
    prompt = prompt if prompt is not None else f"a photo of {name}"
    params = {"size": "1024x1024"}
    key = job_key(model, prompt, params, (), index)
    return Job(key=key, name=name, alias="a", model=model, provider=provider, prompt=prompt,
               params=params, index=index, estimate=Estimate(images, usd, credits))


def make_plan(jobs: list[Job], *, tmp: Path, limits: dict[str, Limits] | None = None,
              budget: Budget | None = None, name: str = "test-run") -> Plan:
    manifest = tmp / "manifest.yaml"
    data = b"version: 1\nname: test-run\n# fake manifest for executor tests\n"
    manifest.write_bytes(data)
    return Plan(manifest_path=manifest, manifest_bytes=data, name=name, jobs=tuple(jobs),
                limits=limits or {}, budget=budget or Budget())
