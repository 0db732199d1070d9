"""The emulator's memory: tasks, files and the counters behind ``/__stats``, shared by every
emulated provider, and each provider's own part (:class:`ProviderState`: its account).

Nothing runs in the background. A task's progress is a pure function of the clock: each
request first *settles* the tasks whose time is up (billing the successful ones through
their provider's part), then reads their status. Output bytes are rendered on first need
and cached, so every download of one output is byte-identical and its listed size is exact.

Nothing here knows a provider: each one's emulator (``EmulatorSpec``) brings its routes and,
through ``EmulatorSpec.make_state``, a :class:`ProviderState` subclass holding what its
account remembers (balance, id counters, tokens, nonces, pending uploads), how its tasks
are billed and when a task that fails before its model runs stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import random
import secrets
import string
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from runner.emulator.config import EmulatorConfig, check_options, provider_options
from runner.emulator.faults import (
    COUNTED,
    FaultInjector,
    FaultSpec,
    TaskFault,
    marked_fault,
    streams,
)
from runner.plugins import registry
from runner.spec import ProviderSpec

Clock = Callable[[], float]

#: The tasks created while handling the current request (set by the request's wrapper), so
#: that a drop after the handler ran knows which tasks it orphaned.
CREATED_HERE: ContextVar[list[Task] | None] = ContextVar("seedbatch_emulator_created",
                                                          default=None)

_TOKEN_ALPHABET = string.ascii_letters + string.digits
# Random bytes → letters and digits: each byte below 248 (4 × 62) names one of the 62
# evenly, the others are dropped, so every character is uniform, as secrets.choice makes
# them, from one system call instead of one per character.
_TOKEN_TABLE = bytes(ord(_TOKEN_ALPHABET[b % len(_TOKEN_ALPHABET)]) if b < 248 else 0
                     for b in range(256))
_TOKEN_DROP = bytes(range(248, 256))


def token(n: int = 30) -> str:
    """``n`` random letters and digits (a secret)."""
    out = b""
    while len(out) < n:
        out += secrets.token_bytes(n + 8).translate(_TOKEN_TABLE, _TOKEN_DROP)
    return out[:n].decode("ascii")


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
    """One task of one provider. A provider's emulator may subclass it for the fields its
    host lists back (``EmulatorState.new_task(..., cls=…)``)."""

    provider: str
    model: str  # what the host calls the model (``ModelSpec.endpoint``)
    id: str
    prompt: str
    params: dict[str, Any]  # typed, documented defaults filled in
    inputs: tuple[str, ...]  # reference images: content hash, or URL when remote
    images: int  # outputs a success produces
    width: int  # requested output size
    height: int
    created: float
    duration: float
    fails: bool  # runs, then ends failed (the ``fail`` fault)
    task_error: bool = False  # fails before its model runs (the ``task_error`` fault)
    folder: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str | None = None  # "succeeded" | "failed" | "cancelled" once terminal
    finished: float | None = None
    outputs: list[Output] = field(default_factory=list)
    cost_usd: float = 0.0  # billed (ProviderState.bill)
    credits: float = 0
    polls: int = 0  # status requests answered for this task
    polls_after_end: int = 0  # … of which after it had ended
    answer_lost: bool = False  # the submit that created it was dropped after the fact

    @property
    def terminal(self) -> bool:
        return self.outcome is not None

    @property
    def request_key(self) -> str:
        """Identity of what was asked: two billed tasks with one key were paid twice."""
        doc = {"provider": self.provider, "model": self.model, "prompt": self.prompt,
               "params": self.params, "inputs": list(self.inputs)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class ProviderContext:
    """What a provider's part is made from (``EmulatorSpec.make_state(context)``)."""

    name: str
    spec: ProviderSpec
    config: EmulatorConfig
    options: Mapping[str, Any]  # EmulatorSpec.options, with EmulatorConfig.options on top
    credentials: Mapping[str, str] = field(repr=False)  # variable → the value accepted


class ProviderState:
    """One emulated provider's account: what it remembers between requests (reset with
    everything else by ``POST /__reset``) and the hooks the shared core calls.

    This default has no balance and bills the list prices of the provider's models
    (``ModelSpec.price``). A provider's emulator subclasses it (``EmulatorSpec.make_state``)
    for its balance, id counters, tokens, nonces or pending uploads, and overrides the
    hooks: :meth:`new_id`, :meth:`ends_at`, :meth:`bill`, :meth:`balances`."""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.name = context.name
        self.options = context.options
        self.credentials = context.credentials

    def new_id(self) -> str:
        """A new task's id (default: 32 hex digits)."""
        return uuid.uuid4().hex

    def ends_at(self, task: Task) -> float:
        """When ``task`` reaches its terminal state, unless cancelled first."""
        return task.created + task.duration

    def list_price(self, model: str, images: int) -> tuple[float, float]:
        """(USD, credits) that ``images`` images of ``model`` (its endpoint) cost at list
        price; nothing for a model the provider does not list."""
        for spec in self.context.spec.models:
            if spec.endpoint == model:
                price = spec.price
                return ((price.usd_per_image or 0.0) * images,
                        (price.credits_per_image or 0) * images)
        return 0.0, 0

    def bill(self, task: Task) -> None:
        """Charge the account for ``task``, which has just succeeded: set
        ``task.cost_usd`` and/or ``task.credits`` (what ``/__stats`` adds up) and take
        them from a balance if there is one."""
        task.cost_usd, task.credits = self.list_price(task.model, task.images)

    def balances(self) -> dict[str, Any]:
        """This account's entries of ``/__stats`` ``balances`` (keys prefixed with the
        provider's name, e.g. ``{"acme_usd": 12.5}``)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Its settings, for the index (``GET /__``)."""
        return dict(self.options)


class Stats:
    """Counters for ``GET /__stats``."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = defaultdict(Counter)  # endpoint → status
        self.faults: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.concurrency_refusals: Counter[str] = Counter()  # by provider
        self.task_errors = 0  # tasks that failed before their model ran (task_error)
        self.answers_lost = 0  # tasks created by a submit whose answer was then dropped
        self.rendered_ahead = 0  # outputs rendered while their task ran (render_ahead)
        self.created: dict[str, Counter[str]] = defaultdict(Counter)
        self.outcomes: Counter[str] = Counter()
        self.inflight_requests = 0
        self.inflight_requests_peak = 0
        self.tasks_peak: Counter[str] = Counter()
        self.billed_tasks = 0
        self.billed_images = 0
        self.billed_usd = 0.0
        self.billed_credits: float = 0
        self.downloads = 0
        self.download_bytes = 0
        self.uploads = 0
        self.paid: dict[str, list[Task]] = defaultdict(list)
        # push channels (websockets): connections opened / refused / dropped / silent,
        # subscriptions received, frames sent
        self.push: Counter[str] = Counter()

    def request_started(self, endpoint: str) -> None:
        self.requests[endpoint] += 1
        self.inflight_requests += 1
        self.inflight_requests_peak = max(self.inflight_requests_peak, self.inflight_requests)

    def request_finished(self, endpoint: str, status: str) -> None:
        self.inflight_requests -= 1
        self.statuses[status] += 1
        self.responses[endpoint][status] += 1

    def snapshot(self, decisions: Counter[str], providers: tuple[str, ...]) -> dict[str, Any]:
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
            "outputs_rendered_ahead": self.rendered_ahead,
            "inflight_tasks_peak": dict(self.tasks_peak),
            "tasks_billed": self.billed_tasks,
            "images_billed": self.billed_images,
            "billed_usd": round(self.billed_usd, 12),
            "billed_credits": self.billed_credits,
            "faults": {k: self.faults[k] for k in COUNTED},
            "fault_decisions": {s: decisions[s] for s in streams(providers)},
            "rejections": dict(sorted(self.rejections.items())),
            "concurrency_refusals": {p: self.concurrency_refusals[p] for p in providers},
            "downloads": self.downloads,
            "download_bytes": self.download_bytes,
            "uploads": self.uploads,
            "push": {k: self.push[k] for k in ("connections", "refused", "dropped", "silent",
                                              "subscriptions", "frames")},
            "duplicate_paid": sum(d["count"] - 1 for d in duplicates),
            "duplicates": duplicates,
        }


class EmulatorState:
    """Everything the emulated accounts remember; reset by ``POST /__reset``.

    ``providers``: the providers served, by name (default: every installed one that ships
    an emulator); each gets its part (:meth:`part`)."""

    def __init__(self, config: EmulatorConfig, clock: Clock | None = None,
                 providers: Mapping[str, ProviderSpec] | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or time.time
        self.clock_offset = 0.0  # moved by POST /__clock (tests hold or finish tasks at will)
        self.frozen_at: float | None = None  # POST /__clock {"freeze": true}: time stands still
        self.listeners: set[asyncio.Event] = set()  # push channels, woken by poke()
        if providers is None:
            providers = registry().providers
        self.specs: dict[str, ProviderSpec] = {name: spec for name, spec in providers.items()
                                               if spec.emulator is not None}
        check_options(config.options, self.specs)
        self.task_faults: dict[str, tuple[TaskFault, ...]] = {
            name: tuple(f for f in ("task_error", "fail")
                        if spec.emulator is not None and f in spec.emulator.task_faults)
            for name, spec in self.specs.items()}
        self.reset()

    @property
    def providers(self) -> tuple[str, ...]:
        """The names of the providers served."""
        return tuple(self.specs)

    def reset(self) -> None:
        cfg = self.config
        self.rng = random.Random(cfg.seed)  # latency jitter
        self.faults = FaultInjector(cfg.faults, cfg.seed)
        self.stats = Stats()
        self.tasks: dict[tuple[str, str], Task] = {}
        self.active: dict[tuple[str, str], Task] = {}  # unfinished, in creation order
        # … by provider (also in creation order), and when each ends: (ends_at, creation
        # number, task), earliest first; a cancelled task's entry stays until it comes up
        self._active_of: dict[str, dict[str, Task]] = {name: {} for name in self.specs}
        # … and what each holds of its account while it runs (new_task's ``reserve``)
        self._reserves: dict[str, dict[str, float]] = {name: {} for name in self.specs}
        self._ends: list[tuple[float, int, Task]] = []
        self._created = itertools.count()
        self.files: dict[str, StoredFile] = {}
        # render_ahead: each planned output's file (by task) and when to render it
        self._ahead: dict[tuple[str, str], list[StoredFile]] = {}
        self._render_at: list[tuple[float, int, StoredFile, Task]] = []
        self.parts: dict[str, ProviderState] = {
            name: self._make_part(name, spec) for name, spec in self.specs.items()}

    def _make_part(self, name: str, spec: ProviderSpec) -> ProviderState:
        emulator = spec.emulator
        assert emulator is not None
        context = ProviderContext(
            name=name, spec=spec, config=self.config,
            options=provider_options(name, emulator.options, self.config.options),
            credentials={var: self.config.credential(var, emulator.credentials.get(var, ""))
                         for var in spec.credentials})
        if emulator.make_state is None:
            return ProviderState(context)
        part = emulator.make_state(context)
        if not isinstance(part, ProviderState):
            raise TypeError(f"the {name} emulator's make_state returned {part!r}, not a "
                            f"ProviderState")
        return part

    def part(self, provider: str) -> ProviderState:
        """Provider ``provider``'s own part of the emulator (its account)."""
        return self.parts[provider]

    def set_faults(self, spec: FaultSpec) -> None:
        self.faults = self.faults.with_spec(spec)

    # --- time ---------------------------------------------------------------------------
    def now(self) -> float:
        if self.frozen_at is not None:
            return self.frozen_at
        return self.clock() + self.clock_offset

    def poke(self) -> None:
        """Something changed outside the flow of time (the clock moved, a task was
        cancelled): wake every push channel to look again."""
        for event in self.listeners:
            event.set()

    def settle(self, now: float | None = None) -> None:
        """Finish every task whose time is up, in the order they were created; bill the
        successful ones. Each task's end (``ProviderState.ends_at``) is asked once, when
        it is created: only the tasks that are due are looked at."""
        now = self.now() if now is None else now
        ends = self._ends
        if not ends or ends[0][0] > now:
            return
        due: list[tuple[int, float, Task]] = []
        while ends and ends[0][0] <= now:
            end, number, task = heapq.heappop(ends)
            if task.outcome is None:  # not cancelled meanwhile
                due.append((number, end, task))
        due.sort(key=lambda item: item[0])
        for _, end, task in due:
            self._deactivate(task)
            self._finish(task, end)

    def _deactivate(self, task: Task) -> None:
        del self.active[(task.provider, task.id)]
        del self._active_of[task.provider][task.id]
        self._reserves[task.provider].pop(task.id, None)

    def _finish(self, task: Task, when: float) -> None:
        task.finished = when
        if task.task_error or task.fails:
            task.outcome = "failed"
            self.stats.outcomes["failed"] += 1
            self.stats.task_errors += task.task_error
            return
        task.outcome = "succeeded"
        self.stats.outcomes["succeeded"] += 1
        ahead = self._ahead.pop((task.provider, task.id), None)
        for i in range(task.images):
            stored = ahead[i] if ahead else self._stored_output(task, i)
            self.files[stored.path] = stored
            task.outputs.append(Output(index=i, name=stored.path.rsplit("/", 1)[-1],
                                       file=stored))
        self.parts[task.provider].bill(task)
        self.stats.billed_usd += task.cost_usd
        self.stats.billed_credits += task.credits
        self.stats.billed_tasks += 1
        self.stats.billed_images += task.images
        self.stats.paid[task.request_key].append(task)

    def _stored_output(self, task: Task, index: int) -> StoredFile:
        """Output ``index`` of ``task``, rendered when first read (not yet served)."""
        from runner.emulator.images import make_output

        path = f"{task.provider}/{task.folder}/{index}.png"
        cfg = self.config
        short = task.model.rsplit("/", 1)[-1]
        caption = f"{short} · {index + 1}/{task.images}"
        prompt, w, h = task.prompt, task.width, task.height

        def render() -> bytes:
            return make_output(prompt, w, h, mode=cfg.image_size, caption=caption,
                               pad_to=cfg.output_pad_bytes)

        return StoredFile(path=path, content_type="image/png", render=render)

    # --- outputs rendered ahead (``EmulatorConfig.render_ahead``) -------------------------
    def _plan_outputs(self, task: Task, end: float) -> None:
        """A host renders while its task runs: ``task``'s outputs are due for rendering
        halfway to its end, so a download at the end finds them ready."""
        files = [self._stored_output(task, i) for i in range(task.images)]
        self._ahead[(task.provider, task.id)] = files
        at = task.created + (end - task.created) / 2
        for stored in files:
            heapq.heappush(self._render_at, (at, next(self._created), stored, task))

    def renders_due(self) -> list[StoredFile]:
        """The planned outputs whose time to render has come, still unrendered, of tasks not
        cancelled."""
        now = self.now()
        due: list[StoredFile] = []
        heap = self._render_at
        while heap and heap[0][0] <= now:
            _, _, stored, task = heapq.heappop(heap)
            if task.outcome != "cancelled" and stored.data is None:
                due.append(stored)
        return due

    def next_render_at(self) -> float | None:
        """The emulator time the next planned render is due (None: nothing planned)."""
        return self._render_at[0][0] if self._render_at else None

    # --- tasks --------------------------------------------------------------------------
    def active_tasks(self, provider: str) -> list[Task]:
        """``provider``'s unfinished tasks, in the order they were created."""
        return list(self._active_of.get(provider, {}).values())

    def active_count(self, provider: str) -> int:
        return len(self._active_of.get(provider, ()))

    def reserved(self, provider: str) -> float:
        """What ``provider``'s unfinished tasks hold of its account (their ``reserve``),
        added up in the order they were created."""
        return sum(self._reserves.get(provider, {}).values())

    def new_task(self, provider: str, *, model: str, prompt: str, images: int = 1,
                 width: int = 1024, height: int = 1024, params: dict[str, Any] | None = None,
                 inputs: tuple[str, ...] = (), cls: type[Task] = Task,
                 reserve: float | None = None, **fields: Any) -> Task:
        """Create a task of ``provider`` (an instance of ``cls``, a :class:`Task` or a
        subclass taking ``fields``): its id from the provider's part, its fate drawn (the
        ``--faults`` rates, the prompt markers), its duration from ``latency`` and
        ``jitter``. ``reserve``: what it holds of the account until it ends (its price),
        counted by :meth:`reserved`. It is settled at once when its time is already up."""
        part = self.parts[provider]
        task_id = part.new_id()
        jitter = self.config.jitter
        factor = 1.0 + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        # Every task takes its draw; a prompt marker then decides instead (see faults.py).
        kinds = self.task_faults[provider]
        drawn = self.faults.for_task(provider, kinds)
        fate = marked_fault(prompt, kinds) or drawn
        if fate is not None:
            self.stats.faults[fate] += 1
        task = cls(provider=provider, model=model, id=task_id, prompt=prompt,
                   params={} if params is None else params, inputs=inputs, images=images,
                   width=width, height=height, created=self.now(),
                   duration=max(0.0, self.config.latency * factor), fails=fate == "fail",
                   task_error=fate == "task_error", **fields)
        sink = CREATED_HERE.get()
        if sink is not None:
            sink.append(task)
        self.tasks[(provider, task_id)] = task
        self.active[(provider, task_id)] = task
        self._active_of[provider][task_id] = task
        if reserve is not None:
            self._reserves[provider][task_id] = reserve
        end = part.ends_at(task)
        heapq.heappush(self._ends, (end, next(self._created), task))
        if self.config.render_ahead and not (task.fails or task.task_error):
            self._plan_outputs(task, end)
        self.stats.created[provider][task.model] += 1
        self.stats.tasks_peak[provider] = max(self.stats.tasks_peak[provider],
                                              self.active_count(provider))
        self.settle()  # a zero-latency task is done at once
        return task

    def count_poll(self, task: Task) -> None:
        """A status request about ``task`` is being answered (after :meth:`settle`)."""
        task.polls += 1
        if task.terminal:
            task.polls_after_end += 1

    def cancel(self, task: Task) -> None:
        if self.active.get((task.provider, task.id)) is task:
            self._deactivate(task)
        task.outcome = "cancelled"
        task.finished = self.now()
        self._ahead.pop((task.provider, task.id), None)
        self.stats.outcomes["cancelled"] += 1
        self.poke()

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

    def describe(self) -> dict[str, Any]:
        """The settings (no credentials), each provider's options in full."""
        return {**self.config.describe(),
                "options": {name: part.describe() for name, part in self.parts.items()}}

    def snapshot(self) -> dict[str, Any]:
        self.settle()
        snap = self.stats.snapshot(self.faults.decisions, self.providers)
        snap["active_tasks"] = {p: self.active_count(p) for p in self.providers}
        snap["balances"] = {key: value for part in self.parts.values()
                            for key, value in part.balances().items()}
        snap["faults_spec"] = str(self.faults.spec)
        # Outputs of billed tasks that no client ever fetched whole: money paid for nothing.
        snap["paid_outputs_unfetched"] = sum(
            1 for task in self.tasks.values() if task.outcome == "succeeded"
            for out in task.outputs if out.file.fetched == 0)
        # status requests answered about tasks that had already ended (a client that trusts
        # each answer asks once per task; more means it fetched an ended task again)
        snap["polls_after_end"] = sum(t.polls_after_end for t in self.tasks.values())
        return snap
