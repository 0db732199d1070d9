"""The emulator's memory: accounts, tasks, files, nonces and the counters behind ``/__stats``.

Nothing runs in the background. A task's progress is a pure function of the clock: each
request first *settles* the tasks whose time is up (billing the successful ones), then reads
their status. Output bytes are rendered on first need and cached, so every download of one
output is byte-identical and its listed size is exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import string
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from runner.emulator.config import EmulatorConfig
from runner.emulator.faults import COUNTED, STREAMS, FaultInjector, FaultSpec, marked_fault

Clock = Callable[[], float]

#: The tasks created while handling the current request (set by the request's wrapper), so
#: that a drop after the handler ran knows which tasks it orphaned.
CREATED_HERE: ContextVar[list[Task] | None] = ContextVar("seedbatch_emulator_created",
                                                          default=None)

# Wiro's task lifecycle, in order (Wiro-Docs, tasks.md). The last one is terminal.
WIRO_STAGES: tuple[str, ...] = (
    "task_queue", "task_accept", "task_preprocess_start", "task_preprocess_end",
    "task_assign", "task_start", "task_output", "task_output_full", "task_end",
    "task_postprocess_start",
)
# A failing model writes to stderr: Task/Detail shows the accumulated stderr stage,
# task_error_full, where a good run shows task_output_full, and the task still ends in
# task_postprocess_end, with a non-zero pexit. Never the bare "task_error" status: in a
# Task/Detail answer that is the terminal pre-execution failure below (PROVIDERS.md, "task_error
# means two different things"); as a live websocket event it is stderr, which is not emulated.
WIRO_FAILING_STAGES: tuple[str, ...] = tuple(
    {"task_output_full": "task_error_full"}.get(s, s) for s in WIRO_STAGES
)
WIRO_DONE = "task_postprocess_end"
WIRO_CANCELLED = "task_cancel"
# A task that fails before its model runs (the ``task_error`` fault, or the prompt marker
# ``emulator:task_error``) ends with this status in Task/Detail when it would have been given
# a worker: it passes task_queue … task_preprocess_end, then stops for good.
WIRO_TASK_ERROR = "task_error"
WIRO_TASK_ERROR_AT = WIRO_STAGES.index("task_assign")
WIRO_TASK_ERROR_TEXT = ("Task could not be started: the output folder for the task could not "
                        "be created (emulated pre-execution failure, status task_error)")
# Task/Cancel only takes tasks not yet assigned to a worker; later ones need Task/Kill.
WIRO_CANCELLABLE = frozenset(WIRO_STAGES[: WIRO_STAGES.index("task_assign")])

# List prices per image (BytePlus; see runner.catalog) — what the emulated Wiro bills.
WIRO_PRICES_USD = {
    "bytedance/seedream-v4-5": 0.04,
    "bytedance/seedream-v4": 0.03,
    "bytedance/text-to-image-seedream-v3": 0.03,
}
PIXWITH_CREDITS_PER_IMAGE = 6

_TOKEN_ALPHABET = string.ascii_letters + string.digits


def token(n: int = 30) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))


@dataclass
class StoredFile:
    """A file served under ``/files/<path>``: an upload, or an output rendered on demand."""

    path: str
    content_type: str
    data: bytes | None = None
    render: Callable[[], bytes] | None = None
    sha256: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    fetched: int = 0  # whole GETs served (a truncated body does not count)

    async def read(self) -> bytes:
        if self.data is None:
            async with self.lock:
                if self.data is None:
                    assert self.render is not None
                    # large renders (full size, padded outputs) stay off the event loop
                    self.data = await asyncio.to_thread(self.render)
                    self.sha256 = hashlib.sha256(self.data).hexdigest()
        return self.data


@dataclass
class Output:
    index: int
    name: str
    file: StoredFile
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    accesskey: str = field(default_factory=token)


@dataclass
class Task:
    provider: str  # "wiro" | "pixwith"
    model: str  # Wiro "bytedance/seedream-v4"; Pixwith "0-32"
    id: str
    token: str  # Wiro socketaccesstoken ("" on Pixwith)
    prompt: str
    params: dict[str, Any]  # typed, documented defaults filled in
    parameters: dict[str, Any]  # as Wiro lists them back in Task/Detail
    inputs: tuple[str, ...]  # reference images: content hash, or URL when remote
    images: int  # outputs a success produces
    width: int  # requested output size
    height: int
    created: float
    duration: float
    fails: bool  # runs, then ends failed (the ``fail`` fault)
    callback_url: str = ""
    task_error: bool = False  # Wiro: fails before its model runs (the ``task_error`` fault)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    folder: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str | None = None  # "succeeded" | "failed" | "cancelled" once terminal
    finished: float | None = None
    outputs: list[Output] = field(default_factory=list)
    cost_usd: float = 0.0
    credits: int = 0
    polls: int = 0  # status requests (Task/Detail, task/get) answered for this task
    polls_after_end: int = 0  # … of which after it had ended
    answer_lost: bool = False  # the submit that created it was dropped after the fact

    @property
    def terminal(self) -> bool:
        return self.outcome is not None

    @property
    def ends_at(self) -> float:
        """When the task reaches its terminal state, unless cancelled first."""
        if self.task_error:
            return self.stage_time(WIRO_TASK_ERROR_AT)
        return self.created + self.duration

    @property
    def request_key(self) -> str:
        """Identity of what was asked: two billed tasks with one key were paid twice."""
        doc = {"provider": self.provider, "model": self.model, "prompt": self.prompt,
               "params": self.params, "inputs": list(self.inputs)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()

    def stages(self) -> tuple[str, ...]:
        return WIRO_FAILING_STAGES if self.fails else WIRO_STAGES

    def stage_time(self, index: int) -> float:
        """When stage ``index`` of :meth:`stages` begins."""
        return self.created + self.duration * index / len(WIRO_STAGES)

    def wiro_status(self, now: float) -> str:
        if self.outcome == "cancelled":
            return WIRO_CANCELLED
        if self.outcome is not None:
            return WIRO_TASK_ERROR if self.task_error else WIRO_DONE
        if self.duration <= 0:
            return self.stages()[-1]
        index = int((now - self.created) / self.duration * len(WIRO_STAGES))
        return self.stages()[max(0, min(index, len(WIRO_STAGES) - 1))]

    def pixwith_status(self) -> int:
        return {"succeeded": 2, "failed": 3}.get(self.outcome or "", 1)


class Stats:
    """Counters for ``GET /__stats``."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = defaultdict(Counter)  # endpoint → status
        self.faults: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.concurrency_refusals: Counter[str] = Counter()  # by provider
        self.task_errors = 0  # tasks that ended in Wiro's task_error status
        self.answers_lost = 0  # tasks created by a submit whose answer was then dropped
        self.created: dict[str, Counter[str]] = defaultdict(Counter)
        self.outcomes: Counter[str] = Counter()
        self.inflight_requests = 0
        self.inflight_requests_peak = 0
        self.tasks_peak: Counter[str] = Counter()
        self.billed_tasks = 0
        self.billed_images = 0
        self.billed_usd = 0.0
        self.billed_credits = 0
        self.downloads = 0
        self.download_bytes = 0
        self.uploads = 0
        self.paid: dict[str, list[Task]] = defaultdict(list)

    def request_started(self, endpoint: str) -> None:
        self.requests[endpoint] += 1
        self.inflight_requests += 1
        self.inflight_requests_peak = max(self.inflight_requests_peak, self.inflight_requests)

    def request_finished(self, endpoint: str, status: str) -> None:
        self.inflight_requests -= 1
        self.statuses[status] += 1
        self.responses[endpoint][status] += 1

    def snapshot(self, decisions: Counter[str]) -> dict[str, Any]:
        duplicates: list[dict[str, Any]] = [
            {"provider": ts[0].provider, "model": ts[0].model, "prompt": ts[0].prompt,
             "params": ts[0].params, "inputs": list(ts[0].inputs), "count": len(ts),
             "task_ids": [t.id for t in ts]}
            for ts in self.paid.values() if len(ts) > 1
        ]
        return {
            "requests_total": sum(self.requests.values()),
            "requests_by_endpoint": dict(sorted(self.requests.items())),
            "requests_by_status": dict(sorted(self.statuses.items())),
            "responses_by_endpoint": {e: dict(sorted(c.items()))
                                      for e, c in sorted(self.responses.items())},
            "inflight_requests_peak": self.inflight_requests_peak,
            "tasks_created": {p: dict(c) for p, c in sorted(self.created.items())},
            "tasks_created_total": sum(sum(c.values()) for c in self.created.values()),
            "tasks_succeeded": self.outcomes["succeeded"],
            "tasks_failed": self.outcomes["failed"],
            "tasks_cancelled": self.outcomes["cancelled"],
            "tasks_task_error": self.task_errors,
            "tasks_answer_lost": self.answers_lost,
            "inflight_tasks_peak": dict(self.tasks_peak),
            "tasks_billed": self.billed_tasks,
            "images_billed": self.billed_images,
            "billed_usd": round(self.billed_usd, 12),
            "billed_credits": self.billed_credits,
            "faults": {k: self.faults[k] for k in COUNTED},
            "fault_decisions": {s: decisions[s] for s in STREAMS},
            "rejections": dict(sorted(self.rejections.items())),
            "concurrency_refusals": {p: self.concurrency_refusals[p]
                                     for p in ("wiro", "pixwith")},
            "downloads": self.downloads,
            "download_bytes": self.download_bytes,
            "uploads": self.uploads,
            "duplicate_paid": sum(d["count"] - 1 for d in duplicates),
            "duplicates": duplicates,
        }


class EmulatorState:
    """Everything the emulated accounts remember; reset by ``POST /__reset``."""

    def __init__(self, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or time.time
        self.clock_offset = 0.0  # moved by POST /__clock (tests hold or finish tasks at will)
        self.frozen_at: float | None = None  # POST /__clock {"freeze": true}: time stands still
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self.rng = random.Random(cfg.seed)  # latency jitter
        self.faults = FaultInjector(cfg.faults, cfg.seed)
        self.stats = Stats()
        self.tasks: dict[tuple[str, str], Task] = {}
        self.tokens: dict[str, Task] = {}
        self.active: dict[tuple[str, str], Task] = {}
        self.files: dict[str, StoredFile] = {}
        self.nonces: set[tuple[str, str]] = set()
        self.uploads: dict[str, dict[str, Any]] = {}  # Pixwith presigned uploads by key
        self.wiro_balance = float(cfg.wiro_balance_usd)
        self.pixwith_credits = int(cfg.pixwith_credits)
        self.next_wiro_id = 100001
        self.upload_secret = secrets.token_bytes(32)  # signs Pixwith presigned uploads

    def set_faults(self, spec: FaultSpec) -> None:
        self.faults = self.faults.with_spec(spec)

    # --- time ---------------------------------------------------------------------------
    def now(self) -> float:
        if self.frozen_at is not None:
            return self.frozen_at
        return self.clock() + self.clock_offset

    def settle(self, now: float | None = None) -> None:
        """Finish every task whose time is up; bill the successful ones."""
        now = self.now() if now is None else now
        for key, task in list(self.active.items()):
            end = task.ends_at
            if now >= end:
                del self.active[key]
                self._finish(task, end)

    def _finish(self, task: Task, when: float) -> None:
        task.finished = when
        if task.task_error or task.fails:
            task.outcome = "failed"
            self.stats.outcomes["failed"] += 1
            self.stats.task_errors += task.task_error
            return
        task.outcome = "succeeded"
        self.stats.outcomes["succeeded"] += 1
        for i in range(task.images):
            task.outputs.append(self._output_file(task, i))
        if task.provider == "wiro":
            task.cost_usd = WIRO_PRICES_USD[task.model] * task.images
            self.wiro_balance -= task.cost_usd
            self.stats.billed_usd += task.cost_usd
        else:
            task.credits = PIXWITH_CREDITS_PER_IMAGE * task.images
            self.pixwith_credits -= task.credits
            self.stats.billed_credits += task.credits
        self.stats.billed_tasks += 1
        self.stats.billed_images += task.images
        self.stats.paid[task.request_key].append(task)

    def _output_file(self, task: Task, index: int) -> Output:
        from runner.emulator.images import make_output

        name = f"{index}.png"
        path = f"{task.provider}/{task.folder}/{name}"
        cfg = self.config
        short = task.model.rsplit("/", 1)[-1]
        caption = f"{short} · {index + 1}/{task.images}"
        prompt, w, h = task.prompt, task.width, task.height

        def render() -> bytes:
            return make_output(prompt, w, h, mode=cfg.image_size, caption=caption,
                               pad_to=cfg.output_pad_bytes)

        stored = StoredFile(path=path, content_type="image/png", render=render)
        self.files[path] = stored
        return Output(index=index, name=name, file=stored)

    # --- tasks --------------------------------------------------------------------------
    def active_count(self, provider: str) -> int:
        return sum(1 for (p, _) in self.active if p == provider)

    def reserved(self, provider: str) -> float:
        """Money (USD) or credits that tasks still running will cost if they succeed."""
        if provider == "wiro":
            return sum(WIRO_PRICES_USD[t.model] * t.images for (p, _), t in self.active.items()
                       if p == provider)
        return float(sum(PIXWITH_CREDITS_PER_IMAGE * t.images
                         for (p, _), t in self.active.items() if p == provider))

    def new_task(self, **kwargs: Any) -> Task:
        provider = kwargs["provider"]
        if provider == "wiro":
            task_id = str(self.next_wiro_id)
            self.next_wiro_id += 1
            kwargs.setdefault("token", token(30))
        else:
            task_id = uuid.uuid4().hex
            kwargs.setdefault("token", "")
        jitter = self.config.jitter
        factor = 1.0 + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        # Every task takes its draw; a prompt marker then decides instead (see faults.py).
        drawn = self.faults.for_task(provider)
        fate = marked_fault(kwargs["prompt"], provider) or drawn
        if fate is not None:
            self.stats.faults[fate] += 1
        task = Task(id=task_id, created=self.now(), duration=max(0.0, self.config.latency * factor),
                    fails=fate == "fail", task_error=fate == "task_error", **kwargs)
        sink = CREATED_HERE.get()
        if sink is not None:
            sink.append(task)
        self.tasks[(provider, task_id)] = task
        if task.token:
            self.tokens[task.token] = task
        self.active[(provider, task_id)] = task
        self.stats.created[provider][task.model] += 1
        self.stats.tasks_peak[provider] = max(self.stats.tasks_peak[provider],
                                              self.active_count(provider))
        self.settle()  # a zero-latency task is done at once
        return task

    def find_wiro(self, taskid: str = "", tasktoken: str = "") -> Task | None:
        if taskid:
            return self.tasks.get(("wiro", taskid))
        if tasktoken:
            return self.tokens.get(tasktoken)
        return None

    def count_poll(self, task: Task) -> None:
        """A status request about ``task`` is being answered (after :meth:`settle`)."""
        task.polls += 1
        if task.terminal:
            task.polls_after_end += 1

    def cancel(self, task: Task) -> None:
        self.active.pop((task.provider, task.id), None)
        task.outcome = "cancelled"
        task.finished = self.now()
        self.stats.outcomes["cancelled"] += 1

    # --- files --------------------------------------------------------------------------
    def store(self, path: str, data: bytes, content_type: str) -> StoredFile:
        stored = StoredFile(path=path, content_type=content_type, data=data,
                            sha256=hashlib.sha256(data).hexdigest())
        self.files[path] = stored
        self.stats.uploads += 1
        return stored

    def identity(self, ref: str) -> str:
        """What a reference image *is*: the content hash of a file this emulator serves
        (so an upload then its URL counts as the same image), else the reference itself."""
        marker = "/files/"
        if marker in ref:
            stored = self.files.get(ref.split(marker, 1)[1].split("?", 1)[0])
            if stored is not None and stored.sha256:
                return f"sha256:{stored.sha256}"
        return ref

    def snapshot(self) -> dict[str, Any]:
        self.settle()
        snap = self.stats.snapshot(self.faults.decisions)
        snap["active_tasks"] = {p: self.active_count(p) for p in ("wiro", "pixwith")}
        snap["balances"] = {"wiro_usd": round(self.wiro_balance, 12),
                            "pixwith_credits": self.pixwith_credits}
        snap["faults_spec"] = str(self.faults.spec)
        # Outputs of billed tasks that no client ever fetched whole: money paid for nothing.
        snap["paid_outputs_unfetched"] = sum(
            1 for task in self.tasks.values() if task.outcome == "succeeded"
            for out in task.outputs if out.file.fetched == 0)
        return snap
