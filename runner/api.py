"""Library entry points: run a manifest, resume, look at or cancel a run directory.

>>> result = run("manifests/quickstart.yaml", emulate=True)      # doctest: +SKIP
>>> result.exit_code, result.run_dir                              # doctest: +SKIP

``run`` = :func:`prepare` (load the plan, resolve every provider's credentials up front,
apply ``only``/``max_usd``/``concurrency``) then :func:`execute` (create the run directory,
journal, execute, summarise, write the report). The command line asks for confirmation
between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from runner.config import (
    ProviderSettings,
    base_url_var,
    credential_vars,
    emulated_providers,
    is_loopback,
    resolve,
)
from runner.errors import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    AuthError,
    ConfigError,
    FatalProviderError,
    RunDirError,
    StoreError,
)
from runner.execute.budget import spent_so_far
from runner.execute.cancel import (
    CancelReport,
    cancel_remote_tasks,
    cancel_targets,
)
from runner.execute.download import discard_partials
from runner.execute.executor import (
    Executor,
    ExecutorOptions,
    Outcome,
)
from runner.execute.journal import OK_STATES, JobRecord, JobState, Journal, utc_now
from runner.execute.limits import EffectiveLimits, effective_limits
from runner.execute.progress import LogProgress, NullProgress, ProgressSink, RichProgress
from runner.jobs import Budget, Estimate, Job, Limits, Plan
from runner.manifest import load_plan
from runner.outputs import ReuseHit, ReuseLookup
from runner.plugins import registry
from runner.providers import make_provider
from runner.providers.base import Provider
from runner.report import finalize
from runner.report.cache import reuse_lookup
from runner.rundir import (
    JOURNAL_NAME,
    OUTPUTS_DIR,
    RunLock,
    check_record_dir,
    check_run_dir,
    create_run_files,
    new_run_dir,
    output_names,
    read_plan,
)
from runner.store.store import STORE_VAR, Store, open_store_for
from runner.store.sync import (
    META_KEY,
    VIA_STORE,
    PushResult,
    RunUploads,
    StoreHits,
    fetch_hits,
    not_stored_message,
    pull_to,
    push_run,
)
from runner.store.sync import FolderPull as StoreFolderPull
from runner.version import __version__

DEFAULT_EMULATE_LATENCY = 1.0
# The emulator's address when a transport is injected (tests): it has no real one.
TRANSPORT_HOST = "http://127.0.0.1:9"


# -- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    counts: dict[str, int]
    exit_code: int
    spent_usd: float = 0.0
    spent_credits: float = 0.0
    estimate: Estimate = field(default_factory=Estimate)
    images: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    fatal: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    report: Path | None = None
    from_store: int = 0  # jobs whose outputs were placed from the shared store
    store: Mapping[str, Any] | None = None  # the journal's store meta: what was stored

    def _count(self, states: Iterable[JobState]) -> int:
        return sum(self.counts.get(str(s), 0) for s in states)

    @property
    def succeeded(self) -> int:
        """Delivered: downloaded, or reused from an earlier run."""
        return self._count(s for s in JobState if s.delivered)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def unknown(self) -> int:
        return self.counts.get("unknown", 0)

    @property
    def pending(self) -> int:
        """Not finished: never submitted, or a task still out there (resume re-attaches)."""
        return self._count(s for s in JobState if s is JobState.PENDING or s.in_flight)

    @property
    def cancelled(self) -> int:
        return self.counts.get("cancelled", 0)

    @property
    def skipped(self) -> int:
        return self.counts.get("skipped", 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "exit_code": self.exit_code,
            "counts": dict(self.counts), "succeeded": self.succeeded, "failed": self.failed,
            "pending": self.pending, "unknown": self.unknown, "cancelled": self.cancelled,
            "skipped": self.skipped, "images": self.images,
            "spent": {"usd": self.spent_usd, "credits": self.spent_credits},
            "estimate": {"images": self.estimate.images, "usd": self.estimate.usd,
                         "credits": self.estimate.credits},
            "elapsed_seconds": round(self.elapsed, 3), "interrupted": self.interrupted,
            "fatal": list(self.fatal), "messages": list(self.messages),
            "from_store": self.from_store,
            "store": None if self.store is None else
            {k: v for k, v in self.store.items() if not k.endswith("_keys")},
        }


@dataclass(frozen=True)
class Prepared:
    """A plan ready to run: jobs selected, limits and budget settled, credentials checked."""

    plan: Plan
    selected: tuple[Job, ...]
    skipped: Mapping[str, str]  # job key → why it is not run
    names: Mapping[str, Mapping[str, Mapping[str, str]]]  # output names per job
    limits: Mapping[str, EffectiveLimits]
    budget: Budget
    providers: tuple[str, ...]
    emulate: bool
    env: Mapping[str, str]
    force: bool = False
    only: str | None = None
    max_usd_flag: float | None = None  # --max-usd as given (resume keeps it unless replaced)
    reused: Mapping[str, ReuseHit] = field(default_factory=dict)  # job key → earlier outputs
    # Providers this run reaches through an emulator (all under --emulate; else those whose
    # base URL is a `seedbatch emulate` server): their outputs are placeholders.
    emulated_providers: frozenset[str] = frozenset()
    # The shared output store (--store > SEEDBATCH_STORE > the manifest's store:), if any,
    # and what there is to say about it before the run (it could not be read, …).
    store: Store | None = None
    store_notes: tuple[str, ...] = ()
    staged: StoreHits | None = None  # the store hits' checked objects, until the run ends

    @property
    def from_store(self) -> int:
        """Selected jobs whose outputs the store provides."""
        return sum(1 for hit in self.reused.values() if hit.via == VIA_STORE)

    @property
    def emulated(self) -> bool:
        return bool(self.emulated_providers)

    @property
    def to_run(self) -> tuple[Job, ...]:
        """The selected jobs that earlier runs do not already provide."""
        return tuple(j for j in self.selected if j.key not in self.reused)

    @property
    def estimate(self) -> Estimate:
        total = Estimate()
        for job in self.to_run:
            total = total + job.estimate
        return total


# -- shared pieces ----------------------------------------------------------------------------

def _lower(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


def _limits_for(providers: Sequence[str], plan_limits: Mapping[str, Limits],
                concurrency: int | None) -> dict[str, EffectiveLimits]:
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1 (got {concurrency})")
    return {name: effective_limits(plan_limits.get(name), concurrency,
                                   registry().provider(name).default_limits)
            for name in providers}


def _check_max_usd(max_usd: float | None) -> None:
    if max_usd is not None and not max_usd >= 0:
        raise ConfigError(f"--max-usd must be a non-negative amount (got {max_usd})")


def select_jobs(jobs: Sequence[Job], only: str | None) -> tuple[tuple[Job, ...], dict[str, str]]:
    """Jobs whose name matches the glob ``only`` (all without one), and why the rest are out."""
    if not only:
        return tuple(jobs), {}
    chosen = tuple(j for j in jobs if fnmatch.fnmatchcase(j.name, only))
    if not chosen:
        names = ", ".join(sorted({j.name for j in jobs})[:8])
        raise ConfigError(f"--only {only!r} matches no job; job names: {names}"
                          f"{' …' if len({j.name for j in jobs}) > 8 else ''}")
    picked = {j.key for j in chosen}
    return chosen, {j.key: f"not selected by --only {only}" for j in jobs if j.key not in picked}


def prepare(manifest: str | Path, *, emulate: bool = False, max_usd: float | None = None,
            concurrency: int | None = None, only: str | None = None, force: bool = False,
            env: Mapping[str, str] | None = None, runs_dir: str | Path = "runs",
            store: str | Store | None = None) -> Prepared:
    """Load and check everything a run needs before anything is created or sent.

    Unless ``force``, jobs whose outputs an earlier run under ``runs_dir`` already holds
    (same key, files intact), or else the shared store (``store``: a URL or path, else
    ``SEEDBATCH_STORE``, else the manifest's ``store:``), are found here: they are reused,
    not submitted, and neither counted in the estimate nor needing credentials. Jobs made
    through an emulator are never looked up in a store."""
    _check_max_usd(max_usd)
    env = dict(os.environ if env is None else env)
    plan = load_plan(manifest)
    selected, skipped = select_jobs(plan.jobs, only)
    if emulate:
        refuse_unemulated(sorted({job.provider for job in selected}))
    emulated = emulated_providers(sorted({job.provider for job in selected}), plan.providers,
                                  env, emulate=emulate)
    shared = store if isinstance(store, Store) else open_store_for(store, env, plan.store)
    notes: list[str] = []
    lookup = None if force else _reuse_lookup(Path(runs_dir), emulated)
    reused = {job.key: hit for job in selected
              if lookup is not None and (hit := lookup(job)) is not None}
    staged: StoreHits | None = None
    if shared is not None and not force:  # what earlier local runs lack, from the store
        staged = fetch_hits(shared, [j for j in selected if j.key not in reused], emulated)
        reused.update(staged.hits)
        notes += staged.notes
    if shared is not None and emulated:
        notes.append(f"store {shared.url}: jobs made through an emulator are neither looked "
                     f"up in nor uploaded to it")
    providers = tuple(sorted({job.provider for job in selected if job.key not in reused}))
    # Every credential needed, up front: a missing one stops the run before any submit.
    for name in providers:
        resolve(name, plan.providers, env, demo=emulate,
                base_url="http://127.0.0.1" if emulate else None)
    names = {job.key: output_names(plan, job) for job in plan.jobs}
    budget = Budget(_lower(plan.budget.max_usd, max_usd), plan.budget.max_credits)
    return Prepared(plan=plan, selected=selected, skipped=skipped, names=names,
                    limits=_limits_for(providers, plan.limits, concurrency), budget=budget,
                    providers=providers, emulate=emulate, env=env, force=force, only=only,
                    max_usd_flag=max_usd, reused=reused, emulated_providers=emulated,
                    store=shared, store_notes=tuple(notes), staged=staged)


def refuse_unemulated(providers: Sequence[str]) -> None:
    """``--emulate`` with a provider that ships no emulator: refused before anything is
    sent (it would otherwise reach the real host with demo credentials)."""
    lacking = [name for name in providers if registry().provider(name).emulator is None]
    if lacking:
        names = ", ".join(lacking)
        raise ConfigError(f"--emulate: provider{'s' if len(lacking) > 1 else ''} {names} "
                          f"ship{'' if len(lacking) > 1 else 's'} no emulator; nothing was "
                          f"sent. Leave out their jobs (--only) or run without --emulate")


def make_progress(quiet: bool, stream: Any = None) -> ProgressSink:
    if quiet:
        return NullProgress()
    target = stream or sys.stderr
    if hasattr(target, "isatty") and target.isatty():
        return RichProgress()
    return LogProgress(target)


class Emulated(dict[str, str]):
    """Base URLs of an in-process emulator, by provider; ``push``: the addresses of its push
    channels (websockets), for providers that have one (none over an injected transport)."""

    def __init__(self, base: Mapping[str, str], push: Mapping[str, str] | None = None) -> None:
        super().__init__(base)
        self.push = dict(push or {})


@contextlib.contextmanager
def _emulator(emulate: bool, transport: httpx.AsyncBaseTransport | None, latency: float,
              faults: str | None) -> Iterator[Emulated | None]:
    """Base URLs of an in-process emulator (started here unless a transport is injected)."""
    if not emulate:
        yield None
        return
    specs = {name: spec.emulator for name, spec in registry().providers.items()
             if spec.emulator is not None}
    if transport is not None:
        yield Emulated({name: TRANSPORT_HOST + e.path for name, e in specs.items()})
        return
    from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread

    cfg = EmulatorConfig(latency=latency, faults=FaultSpec.parse(faults or ""),
                         render_ahead=True)
    with serve_in_thread(cfg) as server:
        ws = "ws" + server.url[len("http"):]
        yield Emulated({name: server.url + e.path for name, e in specs.items()},
                       {name: ws + e.push_path for name, e in specs.items() if e.push_path})


def _settings(providers: Sequence[str], manifest_providers: Mapping[str, Any],
              env: Mapping[str, str], emulated: Emulated | None,
              ) -> dict[str, ProviderSettings]:
    return {name: resolve(name, manifest_providers, env, demo=emulated is not None,
                          base_url=emulated.get(name) if emulated else None,
                          push_url=emulated.push.get(name) if emulated else None)
            for name in providers}


def _make_providers(settings: Mapping[str, ProviderSettings],
                    limits: Mapping[str, EffectiveLimits],
                    transport: httpx.AsyncBaseTransport | None) -> dict[str, Provider]:
    return {name: make_provider(s, transport=transport, concurrency=limits[name].concurrency)
            for name, s in settings.items()}


def _reuse_from(hits: Mapping[str, ReuseHit]) -> ReuseLookup | None:
    if not hits:
        return None
    return lambda job: hits.get(job.key)


def _reuse_lookup(runs_dir: Path, emulated: frozenset[str]) -> ReuseLookup | None:
    """Outputs of earlier runs under ``runs_dir`` for jobs with the same key, made by the
    same kind of endpoint."""
    if not runs_dir.is_dir():
        return None
    return reuse_lookup(runs_dir, emulated_providers=emulated)


@contextlib.contextmanager
def _signals(executor: Executor, enabled: bool) -> Iterator[None]:
    """SIGINT → executor.interrupt() (first: stop submitting; second: cancel and stop)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, executor.interrupt)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this platform
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _emulated_options(options: ExecutorOptions | None, emulate: bool,
                      latency: float) -> ExecutorOptions:
    """Each provider's first-poll guess (its ``initial_latency``); under --emulate the task
    latency is known, so the first polls need not guess it."""
    if options is not None and options.initial_guess is not None:
        return options
    specs = registry().providers
    guesses = {name: (max(0.05, latency) if emulate else spec.initial_latency)
               for name, spec in specs.items()}
    return replace(options or ExecutorOptions(), initial_guess=guesses)


async def _execute_async(executor: Executor, providers: Mapping[str, Provider],
                         handle_signals: bool) -> Outcome:
    try:
        with _signals(executor, handle_signals):
            return await executor.run()
    finally:
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()


def _exit_code(outcome: Outcome, counts: Mapping[str, int]) -> int:
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if outcome.fatal:
        return EXIT_FATAL
    unfinished = sum(n for state, n in counts.items() if JobState(state) not in OK_STATES)
    return EXIT_OK if unfinished == 0 else EXIT_FAILED


def _finalize_report(run_dir: Path) -> tuple[Path | None, list[str]]:
    """Write report.json, report.html, grid.png and the lockfile; the run's outcome stands
    whatever happens to them (what went wrong becomes a message)."""
    try:
        done = finalize(run_dir)
    except Exception as exc:
        return None, [f"report not written: {type(exc).__name__}: {exc}"]
    return done.report_json, list(done.warnings)


def _messages(outcome: Outcome, journal: Journal, run_dir: Path) -> list[str]:
    notes = []
    for exc in outcome.fatal:
        notes.append(fatal_advice(exc))
    if outcome.budget_held:
        n = outcome.budget_held
        notes.append(f"{n} job{'s' if n != 1 else ''} not submitted: the budget would be "
                     f"exceeded ({outcome.budget_reason}). They stay pending; "
                     f"`seedbatch resume {run_dir} --max-usd X` submits them if the budget "
                     f"allows (the lower of the manifest's budget and --max-usd applies)")
    unknown = journal.jobs(JobState.UNKNOWN)
    if unknown:
        notes.append(f"{len(unknown)} job{'s' if len(unknown) != 1 else ''} with an unknown "
                     f"outcome (a task may exist and be billed); check the provider's "
                     f"dashboard, then, to send them again: "
                     f"seedbatch resume {run_dir} --retry-unknown")
    resume_cmd = f"seedbatch resume {run_dir}" + (
        " --emulate" if journal.get_meta("emulate") == "in-process" else "")
    if outcome.interrupted and not outcome.cancelled:
        notes.append(f"interrupted: continue with: {resume_cmd}")
    if outcome.running_on:
        n = outcome.running_on
        notes.append(f"{n} task{'s' if n != 1 else ''} could not be cancelled (the host has no "
                     f"way to stop {'them' if n != 1 else 'it'}): "
                     f"{'they' if n != 1 else 'it'} ran on and {'are' if n != 1 else 'is'} "
                     f"billed; see `seedbatch status {run_dir}`")
    if outcome.cancelled and outcome.left_attached:
        n = outcome.left_attached
        notes.append(f"{n} task{'s' if n != 1 else ''} still running remotely (billed): "
                     f"download {'their' if n != 1 else 'its'} outputs with: {resume_cmd}")
    notes.extend(outcome.notes)
    stored = not_stored_message(journal.get_meta(META_KEY), run_dir)
    if stored:
        notes.append(stored)
    return notes


def fatal_advice(exc: FatalProviderError) -> str:
    name = exc.provider or "the provider"
    if isinstance(exc, AuthError):
        known = exc.provider in registry().providers
        variables = " and ".join(credential_vars(exc.provider)) if known else "the credentials"
        return f"{name} refused the credentials: check {variables} ({exc.message})"
    return f"{name}: not enough balance or credits — top up the account, then resume " \
           f"({exc.message})"


def _finish(run_dir: Path, journal: Journal, outcome: Outcome, estimate: Estimate,
            started: float) -> RunResult:
    journal.set_meta("finished_at", utc_now())
    counts = journal.counts()
    code = _exit_code(outcome, counts)
    journal.set_meta("exit_code", code)
    messages = _messages(outcome, journal, run_dir)
    store_meta = journal.get_meta(META_KEY)
    from_store = 0 if not journal.get_meta("store_url") else sum(
        1 for e in journal.events(kind="state")
        if e.state == "reused" and e.detail.get("via") == VIA_STORE)
    return RunResult(
        run_dir=run_dir, counts=counts, exit_code=code, spent_usd=outcome.spent_usd,
        spent_credits=outcome.spent_credits, estimate=estimate, images=outcome.images,
        elapsed=time.monotonic() - started, interrupted=outcome.interrupted,
        fatal=tuple(str(f) for f in outcome.fatal), messages=tuple(messages),
        from_store=from_store, store=store_meta)


# -- run ----------------------------------------------------------------------------------------

def execute(prepared: Prepared, *, runs_dir: str | Path = "runs", quiet: bool = True,
            progress: ProgressSink | None = None,
            transport: httpx.AsyncBaseTransport | None = None,
            emulate_latency: float = DEFAULT_EMULATE_LATENCY, emulate_faults: str | None = None,
            handle_signals: bool = True, options: ExecutorOptions | None = None,
            on_run_dir: Any = None) -> RunResult:
    """Create the run directory and run the prepared plan (no questions asked)."""
    try:
        return _execute(prepared, runs_dir=runs_dir, quiet=quiet, progress=progress,
                        transport=transport, emulate_latency=emulate_latency,
                        emulate_faults=emulate_faults, handle_signals=handle_signals,
                        options=options, on_run_dir=on_run_dir)
    finally:
        if prepared.staged is not None:
            prepared.staged.close()


def _execute(prepared: Prepared, *, runs_dir: str | Path, quiet: bool,
             progress: ProgressSink | None, transport: httpx.AsyncBaseTransport | None,
             emulate_latency: float, emulate_faults: str | None, handle_signals: bool,
             options: ExecutorOptions | None, on_run_dir: Any) -> RunResult:
    started = time.monotonic()
    plan = prepared.plan
    runs = Path(runs_dir)
    with _emulator(prepared.emulate, transport, emulate_latency, emulate_faults) as emulated:
        settings = _settings(prepared.providers, plan.providers, prepared.env, emulated)
        run_dir = new_run_dir(runs, plan.name)
        if on_run_dir is not None:
            on_run_dir(run_dir)
        lock = RunLock(run_dir).acquire()
        try:
            create_run_files(run_dir, plan, prepared.names)
            meta = {
                "run_id": run_dir.name,
                "name": plan.name,
                "tool": "seedbatch",
                "version": __version__,
                "created_at": utc_now(),
                "started_at": utc_now(),
                "manifest_path": str(plan.manifest_path),
                "manifest_sha256": plan.manifest_sha256,
                # in-process: --emulate (the emulator ends with the process); external: a
                # base URL that is a `seedbatch emulate` server.
                "emulate": "in-process" if prepared.emulate else (
                    "external" if prepared.emulated else None),
                "emulated": prepared.emulated,
                "emulated_providers": sorted(prepared.emulated_providers),
                # which package registered each provider the run sends jobs to, and its version
                "providers": {name: registry().origins[name].to_dict()
                              for name in prepared.providers},
                "base_urls": {name: s.base_url for name, s in settings.items()},
                "options": {"only": prepared.only, "force": prepared.force,
                            "max_usd_flag": prepared.max_usd_flag,
                            "max_usd": prepared.budget.max_usd,
                            "max_credits": prepared.budget.max_credits,
                            "limits": {n: {"concurrency": lim.concurrency,
                                           "requests_per_minute": lim.requests_per_minute}
                                       for n, lim in prepared.limits.items()}},
                "estimate": {"images": prepared.estimate.images, "usd": prepared.estimate.usd,
                             "credits": prepared.estimate.credits},
                # the shared store, as shown (never a credential): resume uses it again
                "store_url": prepared.store.url if prepared.store is not None else None,
            }
            with Journal.create(run_dir / JOURNAL_NAME, plan.jobs, meta,
                                skipped=prepared.skipped) as journal:
                providers = _make_providers(settings, prepared.limits, transport)
                uploads = _uploads(prepared.store, journal, run_dir,
                                   prepared.emulated_providers)
                executor = Executor(
                    run_dir=run_dir, journal=journal, jobs=plan.jobs,
                    output_names=prepared.names, providers=providers, limits=prepared.limits,
                    budget=prepared.budget,
                    progress=progress if progress is not None else make_progress(quiet),
                    options=_emulated_options(options, transport is None and prepared.emulate,
                                              emulate_latency),
                    reuse=_reuse_from(prepared.reused),
                    on_succeeded=uploads.job_done if uploads is not None else None)
                try:
                    outcome = asyncio.run(_execute_async(executor, providers, handle_signals))
                finally:
                    if uploads is not None:
                        uploads.finish()
                result = _finish(run_dir, journal, outcome, prepared.estimate, started)
            report, warnings = _finalize_report(run_dir)
        finally:
            lock.release()
    return replace(result, report=report,
                   messages=prepared.store_notes + result.messages + tuple(warnings))


def _uploads(store: Store | None, journal: Journal, run_dir: Path,
             emulated: frozenset[str]) -> RunUploads | None:
    """Background uploads of what a run downloads for real, when it has a store."""
    if store is None:
        return None
    return RunUploads(store, journal, run_dir, run_dir.name, emulated)


def run(manifest: str | Path, *, emulate: bool = False, runs_dir: str | Path = "runs",
        max_usd: float | None = None, concurrency: int | None = None, only: str | None = None,
        force: bool = False, quiet: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        emulate_latency: float = DEFAULT_EMULATE_LATENCY, emulate_faults: str | None = None,
        progress: ProgressSink | None = None, handle_signals: bool = True,
        options: ExecutorOptions | None = None, store: str | Store | None = None) -> RunResult:
    """Run a manifest end to end; returns where the run directory is and how it went.

    ``transport`` replaces the network for every provider (tests pass
    ``httpx.ASGITransport(app=create_app(cfg))``); ``env`` replaces ``os.environ`` for
    credentials and base URLs; ``store`` is the shared output store (a URL or path, or an
    open :class:`~runner.store.store.Store`; see :func:`prepare`)."""
    prepared = prepare(manifest, emulate=emulate, max_usd=max_usd, concurrency=concurrency,
                       only=only, force=force, env=env, runs_dir=runs_dir, store=store)
    return execute(prepared, runs_dir=runs_dir, quiet=quiet, progress=progress,
                   transport=transport, emulate_latency=emulate_latency,
                   emulate_faults=emulate_faults, handle_signals=handle_signals,
                   options=options)


# -- resume -------------------------------------------------------------------------------------

def _resume_base_urls(meta: Mapping[str, Any], env: Mapping[str, str], emulate: bool,
                      emulated: Mapping[str, str] | None, providers: Sequence[str],
                      run_dir: Path, planned: Mapping[str, Mapping[str, Any]] | None = None,
                      ) -> tuple[dict[str, dict[str, Any]], bool]:
    """Base URLs for a resume: the emulator started now, else ``*_BASE_URL`` from the
    environment, else the ones the run recorded. Returns (providers section, demo); the
    section keeps the manifest's ``realtime`` switches (``planned``: plan.json's)."""
    recorded = dict(meta.get("base_urls") or {})
    section: dict[str, dict[str, Any]] = {
        name: {"realtime": cfg["realtime"]} for name, cfg in (planned or {}).items()
        if name in providers and isinstance(cfg, Mapping) and "realtime" in cfg}
    demo = False
    for name in providers:
        if emulated is not None:
            demo = True
            continue
        if env.get(base_url_var(name)):
            url = env[base_url_var(name)]
        elif name in recorded:
            url = recorded[name]
            if meta.get("emulate") == "in-process":
                part = registry().provider(name).emulator
                where = (f" and set {base_url_var(name)}=http://127.0.0.1:8765{part.path}"
                         if part is not None else "")
                raise ConfigError(
                    f"{run_dir} ran against an emulator inside the process that ran it, which "
                    f"stopped with it. Serve one (seedbatch emulate --port 8765){where}, or "
                    f"pass --emulate to start a fresh one (tasks sent to the old one are sent "
                    f"again: emulated tasks cost nothing)")
        else:
            continue
        section.setdefault(name, {})["base_url"] = url
        if meta.get("emulated") and is_loopback(urlsplit(url).hostname or ""):
            demo = True
    return section, demo


def resume(run_dir: str | Path, *, retry_unknown: bool = False, emulate: bool = False,
           max_usd: float | None = None, concurrency: int | None = None, quiet: bool = True,
           transport: httpx.AsyncBaseTransport | None = None,
           env: Mapping[str, str] | None = None,
           emulate_latency: float = DEFAULT_EMULATE_LATENCY, emulate_faults: str | None = None,
           progress: ProgressSink | None = None, handle_signals: bool = True,
           options: ExecutorOptions | None = None,
           store: str | Store | None = None) -> RunResult:
    """Pick a run up where it stopped: tasks that exist are followed and downloaded (never
    sent again), pending jobs are submitted, jobs left mid-submit become ``unknown`` (sent
    again only with ``retry_unknown``).

    The shared store is ``store``, else ``SEEDBATCH_STORE``, else the one the run used:
    pending jobs it holds are placed from it, and what is downloaded is uploaded to it."""
    started = time.monotonic()
    _check_max_usd(max_usd)
    env = dict(os.environ if env is None else env)
    path = check_run_dir(run_dir)
    doc = read_plan(path)
    lock = RunLock(path).acquire()
    try:
        with Journal.open(path / JOURNAL_NAME) as journal:
            meta = journal.meta()
            records = journal.jobs()
            by_key = {r.key: r for r in records}
            jobs = [j for j in doc.jobs if j.key in by_key]
            active = [j for j in jobs if by_key[j.key].has_work(retry_unknown=retry_unknown)]
            providers = tuple(sorted({j.provider for j in active}))
            opts = _emulated_options(options, emulate and transport is None,
                                     emulate_latency) or ExecutorOptions()
            opts = replace(opts, retry_unknown=retry_unknown)
            if emulate:
                refuse_unemulated(providers)
            if emulate and not meta.get("emulated"):
                raise ConfigError(f"{path} ran against the real providers; --emulate can only "
                                  f"resume a run that was emulated")
            if emulate and meta.get("emulate") != "in-process":
                raise ConfigError(f"{path} ran against an emulator server of its own (its "
                                  f"tasks live there): resume it without --emulate, with that "
                                  f"server running")
            fresh_emulator = emulate and meta.get("emulate") == "in-process"
            with _emulator(emulate, transport, emulate_latency, emulate_faults) as emulated:
                section, demo = _resume_base_urls(meta, env, emulate, emulated, providers, path,
                                                  doc.providers)
                settings = {name: resolve(name, section, env, demo=demo or emulated is not None,
                                          base_url=emulated.get(name) if emulated else None,
                                          push_url=emulated.push.get(name) if emulated
                                          else None)
                            for name in providers}
                if fresh_emulator and emulated is not None:
                    _forget_emulated_tasks(journal)
                # The manifest's budget always applies; --max-usd given to the run applies
                # until a resume gives another.
                flag = max_usd if max_usd is not None else \
                    (meta.get("options") or {}).get("max_usd_flag")
                budget = Budget(_lower(doc.budget.max_usd, flag), doc.budget.max_credits)
                if max_usd is not None:
                    journal.set_meta("options", {**(meta.get("options") or {}),
                                                 "max_usd_flag": max_usd,
                                                 "max_usd": budget.max_usd})
                limits = _limits_for(providers, doc.limits, concurrency)
                journal.set_meta("base_urls", {**(meta.get("base_urls") or {}),
                                               **{n: s.base_url for n, s in settings.items()}})
                resumes = int(meta.get("resumes", 0)) + 1
                journal.set_meta("resumes", resumes)
                if meta.get("cancel_requested"):  # it was meant for the process that ran
                    journal.set_meta("cancel_requested", None)
                journal.note("resume", {"n": resumes, "retry_unknown": retry_unknown})
                providers_obj = _make_providers(settings, limits, transport)
                estimate = Estimate()
                for job in doc.jobs:
                    if by_key.get(job.key) and by_key[job.key].state is not JobState.SKIPPED:
                        estimate = estimate + job.estimate
                discard_partials(path / OUTPUTS_DIR)
                shared = store if isinstance(store, Store) else \
                    open_store_for(store, env, meta.get("store_url"))
                emulated_set = frozenset(meta.get("emulated_providers") or ())
                if meta.get("emulated") and not emulated_set:  # runs of seedbatch 0.1
                    emulated_set = frozenset(j.provider for j in jobs)
                staged: StoreHits | None = None
                if shared is not None:
                    journal.set_meta("store_url", shared.url)
                    pending = [j for j in active if by_key[j.key].state is JobState.PENDING]
                    staged = fetch_hits(shared, pending, emulated_set)
                uploads = _uploads(shared, journal, path, emulated_set)
                executor = Executor(
                    run_dir=path, journal=journal, jobs=jobs, output_names=doc.output_names,
                    providers=providers_obj, limits=limits, budget=budget,
                    progress=progress if progress is not None else make_progress(quiet),
                    options=opts, reuse=staged.lookup if staged is not None else None,
                    on_succeeded=uploads.job_done if uploads is not None else None)
                try:
                    outcome = asyncio.run(_execute_async(executor, providers_obj,
                                                         handle_signals))
                finally:
                    if uploads is not None:
                        uploads.finish()
                    if staged is not None:
                        staged.close()
                result = _finish(path, journal, outcome, estimate, started)
                if staged is not None and staged.notes:
                    result = replace(result, messages=staged.notes + result.messages)
        report, warnings = _finalize_report(path)
    finally:
        lock.release()
    return replace(result, report=report, messages=result.messages + tuple(warnings))


def _forget_emulated_tasks(journal: Journal) -> None:
    """A fresh in-process emulator knows none of the old one's tasks: send them again."""
    for rec in journal.jobs():
        if rec.has_work(retry_unknown=True) and rec.state is not JobState.PENDING:
            journal.set_pending(rec.key, clear_task=True,
                                detail="the emulator that ran this task is gone")


# -- the shared store: push, pull ---------------------------------------------------------------

def push(run_dir: str | Path, *, store: str | Store | None = None,
         env: Mapping[str, str] | None = None) -> PushResult:
    """Upload a run's real outputs and records that the store lacks (``seedbatch push``).
    The store is ``store``, else ``SEEDBATCH_STORE``, else the one the run used."""
    env = dict(os.environ if env is None else env)
    path = check_record_dir(Path(run_dir))
    recorded = None
    if (path / JOURNAL_NAME).is_file():
        with Journal.open(path / JOURNAL_NAME) as journal:
            recorded = journal.get_meta("store_url")
    shared = store if isinstance(store, Store) else open_store_for(store, env, recorded)
    if shared is None:
        raise ConfigError(f"no store to push {path} to: pass --store URL or set "
                          f"{STORE_VAR} (the run used none)")
    return push_run(path, shared)


@dataclass(frozen=True)
class PullResult:
    """What ``seedbatch pull`` placed, and which jobs the store lacks."""

    store_url: str
    missing: tuple[str, ...]  # names of jobs the store has no outputs for
    run: RunResult | None = None  # the run directory made (without --to)
    folder: StoreFolderPull | None = None  # what --to wrote

    @property
    def exit_code(self) -> int:
        if self.missing:
            return EXIT_FAILED
        if self.folder is not None and self.folder.damaged:
            return EXIT_FAILED
        return self.run.exit_code if self.run is not None else EXIT_OK


def pull(manifest: str | Path, *, store: str | Store | None = None,
         runs_dir: str | Path = "runs", to: str | Path | None = None,
         env: Mapping[str, str] | None = None, quiet: bool = True,
         progress: ProgressSink | None = None) -> PullResult:
    """Place the plan's outputs from the store without running anything.

    Without ``to``, into a new run directory under ``runs_dir`` (journal, report and
    lockfile as for a run; the jobs the store lacks are skipped); with ``to``, as files
    named by ``output.filename`` under that folder. Nothing is sent to a provider."""
    env = dict(os.environ if env is None else env)
    plan = load_plan(manifest)
    shared = store if isinstance(store, Store) else open_store_for(store, env, plan.store)
    if shared is None:
        raise ConfigError(f"no store to pull from: pass --store URL, set {STORE_VAR}, or "
                          f"add store: to {plan.manifest_path.name}")
    if to is not None:
        folder = pull_to(plan, shared, to)
        return PullResult(shared.url, tuple(folder.missing), folder=folder)
    staged = fetch_hits(shared, plan.jobs)
    hits = staged.hits
    missing = tuple(job.name for job in plan.jobs if job.key not in hits)
    if not hits:
        staged.close()
        if staged.notes and not any("store not read" not in n for n in staged.notes):
            raise StoreError(staged.notes[0])
        return PullResult(shared.url, missing)
    selected = tuple(job for job in plan.jobs if job.key in hits)
    prepared = Prepared(
        plan=plan, selected=selected,
        skipped={job.key: "not in the store" for job in plan.jobs if job.key not in hits},
        names={job.key: output_names(plan, job) for job in plan.jobs}, limits={},
        budget=plan.budget, providers=(), emulate=False, env=env, reused=hits,
        store=None, store_notes=staged.notes,  # placed from the store: nothing to upload
        staged=staged)
    result = execute(prepared, runs_dir=runs_dir, quiet=quiet, progress=progress)
    return PullResult(shared.url, missing, run=result)


# -- status -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    meta: dict[str, Any]
    counts: dict[str, int]
    jobs: list[JobRecord]
    running_pid: int | None
    spent_usd: float
    spent_credits: float
    outputs: int = 0
    cancel_requested: bool = False
    ran_on: frozenset[str] = frozenset()  # keys of jobs a cancel could not stop

    def ran_on_after_cancel(self) -> list[JobRecord]:
        """Jobs whose task ran on after a cancel (the host could not stop it)."""
        return [r for r in self.jobs if r.key in self.ran_on]

    def ran_on_cost(self) -> tuple[float, float]:
        """What the jobs that ran on after a cancel cost (their estimate until reported)."""
        return spent_so_far(self.ran_on_after_cancel(), committed=True)

    def to_dict(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.meta.items() if k != "options"}
        ran_usd, ran_credits = self.ran_on_cost()
        return {
            "run_dir": str(self.run_dir),
            "running_pid": self.running_pid,
            "meta": meta,
            "counts": self.counts,
            "spent": {"usd": self.spent_usd, "credits": self.spent_credits},
            "outputs": self.outputs,
            "cancel_requested": self.cancel_requested,
            "ran_on_after_cancel": {"jobs": len(self.ran_on), "usd": ran_usd,
                                    "credits": ran_credits},
            "jobs": [{"key": r.key, "name": r.name, "provider": r.provider, "model": r.model,
                      "state": str(r.state), "attempts": r.attempts, "polls": r.polls,
                      "task_id": r.task_id, "provider_status": r.provider_status,
                      "cost_usd": r.cost_usd, "credits": r.credits, "error": r.error,
                      "reason": r.reason, "submitted_at": r.submitted_at,
                      "finished_at": r.finished_at,
                      "ran_on_after_cancel": r.key in self.ran_on} for r in self.jobs],
        }


def status(run_dir: str | Path) -> RunStatus:
    """Where every job of a run stands (safe while another process runs it)."""
    path = check_run_dir(run_dir)
    lock = RunLock(path)
    pid = lock.holder_pid() if lock.is_held() else None
    with Journal.open(path / JOURNAL_NAME) as journal:
        jobs = journal.jobs()
        usd, credits = spent_so_far(jobs)
        return RunStatus(run_dir=path, meta=journal.meta(), counts=journal.counts(), jobs=jobs,
                         running_pid=pid, spent_usd=usd, spent_credits=credits,
                         outputs=len(journal.outputs()),
                         cancel_requested=bool(journal.get_meta("cancel_requested")),
                         ran_on=frozenset(journal.ran_on_after_cancel()))


# -- cancel -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CancelResult:
    run_dir: Path
    signalled_pid: int | None  # a process was running the run and was asked to stop
    stopped: bool  # that process ended within the wait
    cancelled: int  # remote tasks cancelled here (no process was running)
    problems: tuple[str, ...] = ()
    running_on: tuple[str, ...] = ()  # names of jobs whose task cannot be stopped (billed)


def cancel(run_dir: str | Path, *, env: Mapping[str, str] | None = None,
           transport: httpx.AsyncBaseTransport | None = None, wait: float = 30.0) -> CancelResult:
    """Stop a run's remote tasks.

    If a process runs it, a cancel request is written to the journal (the process checks
    it twice a second, cancels its tasks, waits for those the host cannot stop, and exits
    130) and this waits up to ``wait`` seconds for it to end. Otherwise the remote tasks the
    journal shows in flight are cancelled from here; those the host cannot stop stay
    attached (running, billed) for ``resume`` to download."""
    env = dict(os.environ if env is None else env)
    path = check_run_dir(run_dir)
    lock = RunLock(path)
    try:
        lock.acquire()
    except RunDirError:
        pid = lock.holder_pid()
        with Journal.open(path / JOURNAL_NAME) as journal:
            journal.set_meta("cancel_requested", utc_now())
            journal.note("cancel_requested", {"pid": pid, "by": os.getpid()})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and lock.is_held():
            time.sleep(0.1)
        return CancelResult(path, pid, not lock.is_held(), 0)
    try:
        with Journal.open(path / JOURNAL_NAME) as journal:
            meta = journal.meta()
            targets = cancel_targets(journal)
            if not targets:
                journal.note("cancel", {"cancelled": 0})
                return CancelResult(path, None, True, 0)
            providers = tuple(sorted({r.provider for r in targets}))
            section, demo = _resume_base_urls({**meta, "emulate": None}, env, False, None,
                                              providers, path)
            settings = {name: resolve(name, section, env, demo=demo) for name in providers}
            doc = read_plan(path)
            limits = _limits_for(providers, doc.limits, None)
            clients = _make_providers(settings, limits, transport)

            async def go() -> CancelReport:
                try:
                    return await cancel_remote_tasks(journal, clients, why="seedbatch cancel")
                finally:
                    for client in clients.values():
                        with contextlib.suppress(Exception):
                            await client.aclose()

            report = asyncio.run(go())
            names = {r.key: r.name for r in targets}
            journal.note("cancel", {"cancelled": len(report.cancelled),
                                    "running_on": len(report.running_on),
                                    "problems": report.problems})
            return CancelResult(path, None, True, len(report.cancelled),
                                tuple(report.problems),
                                tuple(names[k] for k in report.running_on))
    finally:
        lock.release()


__all__ = [
    "CancelResult",
    "Prepared",
    "PullResult",
    "RunResult",
    "RunStatus",
    "cancel",
    "execute",
    "prepare",
    "pull",
    "push",
    "resume",
    "run",
    "status",
]
