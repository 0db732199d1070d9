"""Throughput of the executor against the emulator, and two naive baselines.

    python bench/throughput.py --jobs 1000 --latency 2 --concurrency 8 --json
    python bench/throughput.py --jobs 200 --latency 2 --jitter 0.5 --realtime off

Runs N Seedream 4.0 jobs on Wiro's emulated API (in-process thread server on loopback,
``image_size=small``, no faults, no latency jitter unless ``--jitter``) through the real
provider client and the real executor (journal, limits, polling policy, downloads), then the
same client driven by:

* ``sequential``: one job at a time — submit, poll every second until done, download
  (measured on ``--sequential-jobs`` jobs and extrapolated linearly to N);
* ``fixed_2s``: the same concurrency, polling every 2 seconds (measured on
  ``--baseline-jobs`` jobs, N by default, and extrapolated when fewer);
* ``wiro_client``: the same concurrency, polling like Wiro's official client (Wiro-MCP
  ``WiroClient``): every 2 s for the first 15 s, every 5 s up to 60 s, then every 10 s
  (measured like ``fixed_2s``).

``--realtime on`` (the default) lets the executor's Wiro client take completion from the
emulator's websocket (one Task/Detail per task once the end is pushed); ``off`` polls.
The baselines always poll.

Figures: ``makespan_s`` (the executor's run, start to last download), ``lower_bound_s`` =
max(N·S/C, request-rate bound), ``ratio``, ``requests_per_job`` (API calls and downloads),
``polls_per_task``, ``cpu_ms_per_job`` (the client's CPU: with ``--emulator process``, the
default, the emulator runs in a process of its own and this is the benchmark process's CPU
time; with ``--emulator thread`` it is this process's CPU minus the emulator's server
thread's, its image-rendering threads counted with the client), ``process_cpu_ms_per_job``
(with ``thread``: client and emulator, which share one interpreter lock, so N times it is
roughly another floor under the makespan), ``emulator_cpu_ms_per_job`` (with ``process``: the
emulator process's user + system CPU during the executor's run, per job), ``peak_rss_mb``
(this process), ``system_cpu_ms_per_job`` (of the process's CPU, the kernel's part: file
system, sockets, thread wake-ups), ``client_to_emulator_cpu`` (with ``process``: the client's
CPU per job over the emulator's; the emulator's code does not change, so this compares the
client's code across runs on a machine whose speed varies), ``reference_cpu_ms`` (a fixed
piece of pure-Python work timed just before and just after the run: the machine's speed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiofiles

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import emulator_process, machine, reference_cpu_ms  # noqa: E402

from runner.catalog import models as installed_models  # noqa: E402
from runner.config import resolve  # noqa: E402
from runner.emulator import EmulatorConfig, create_app, serve_in_thread  # noqa: E402
from runner.emulator import server as emulator_server  # noqa: E402
from runner.errors import TransientError, UnknownOutcome  # noqa: E402
from runner.execute.executor import Executor, ExecutorOptions  # noqa: E402
from runner.execute.journal import Journal  # noqa: E402
from runner.execute.limits import EffectiveLimits  # noqa: E402
from runner.jobs import Estimate, Job, Plan, job_key  # noqa: E402
from runner.providers import make_provider  # noqa: E402
from runner.providers.base import Provider, TaskState  # noqa: E402
from runner.rundir import output_names  # noqa: E402

MODEL = "wiro/seedream-v4"


def make_jobs(n: int) -> list[Job]:
    spec = installed_models()[MODEL]
    params = spec.with_defaults({"size": "1024x1024"})
    jobs = []
    for i in range(n):
        prompt = f"benchmark image {i}"
        jobs.append(Job(key=job_key(MODEL, prompt, params, (), 0), name=f"bench-{i:05d}",
                        alias="v4", model=MODEL, provider="wiro", prompt=prompt, params=params,
                        estimate=Estimate(1, 0.03, 0.0)))
    return jobs


def _listener_sets_nodelay() -> bool:
    sock = emulator_server.bind_socket("127.0.0.1", 0)
    try:
        return sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@contextlib.contextmanager
def serve(cfg: EmulatorConfig) -> Iterator[Any]:
    """The emulator on a loopback socket in a thread of this process.

    asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP; a listener made
    with protocol 0 hands out connections where every keep-alive answer written in two
    pieces waits ~40 ms for a delayed ACK (Nagle). When ``serve_in_thread``'s socket is such
    a one, the same app is served here from a listener created with IPPROTO_TCP."""
    if _listener_sets_nodelay():
        with serve_in_thread(cfg) as server:
            yield server
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(cfg)
    uv = emulator_server.make_server(app)
    thread = threading.Thread(target=lambda: uv.run(sockets=[sock]),
                              name="seedbatch-emulator", daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        yield emulator_server.EmulatorServer(f"http://127.0.0.1:{port}", app)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _emulator_thread() -> threading.Thread | None:
    for thread in threading.enumerate():
        if thread.name == "seedbatch-emulator":
            return thread
    return None


def _thread_cpu(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError):
        return 0.0


class CpuMeter:
    """CPU time of the whole process, and of the process minus the emulator's server thread
    (what the client side costs; the emulator's own worker threads are counted with it)."""

    def __enter__(self) -> CpuMeter:
        self.thread = _emulator_thread()
        self.p0, self.e0 = time.process_time(), _thread_cpu(self.thread)
        self.t0 = os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process = time.process_time() - self.p0
        t1 = os.times()
        #: The process's CPU in the kernel (system calls, file system, sockets): part of
        #: ``process``.
        self.system = t1.system - self.t0.system
        self.seconds = self.process - (_thread_cpu(self.thread) - self.e0)


def provider_for(server: Any, concurrency: int, *, realtime: bool = False) -> Provider:
    env = {"WIRO_API_KEY": "demo-wiro-key", "WIRO_API_SECRET": "demo-wiro-secret"}
    settings = resolve("wiro", None, env, demo=True, base_url=server.wiro_base_url,
                       push_url=server.wiro_push_url if realtime else None)
    if not realtime:
        settings = replace(settings, push_url=None)
    return make_provider(settings, concurrency=concurrency)


def lower_bound(n: int, latency: float, concurrency: int, rpm: float | None) -> float:
    slots = n * latency / concurrency
    # Each job needs at least a submit and a poll.
    rate = 2 * n / (rpm / 60) if rpm else 0.0
    return max(slots, rate)


def figures(n: int, makespan: float, lb: float, requests: dict[str, int], cpu: CpuMeter,
            tasks: int) -> dict[str, Any]:
    total = sum(requests.values())
    return {
        "makespan_s": round(makespan, 3),
        "lower_bound_s": round(lb, 3),
        "ratio": round(makespan / lb, 4) if lb else None,
        "requests_per_job": round(total / n, 3),
        "requests": dict(requests),
        "polls_per_task": round(requests.get("poll", 0) / max(1, tasks), 3),
        "cpu_ms_per_job": round(cpu.seconds * 1000 / n, 3),
        # Client and emulator together: in one process they share one interpreter lock, so
        # N times this is roughly a floor on the makespan that no schedule beats.
        "process_cpu_ms_per_job": round(cpu.process * 1000 / n, 3),
        # Of the process's CPU, the part spent in the kernel on its behalf.
        "system_cpu_ms_per_job": round(cpu.system * 1000 / n, 3),
    }


# -- the executor -------------------------------------------------------------------------------

async def _run_executor(provider: Provider, jobs: list[Job], concurrency: int,
                        rpm: float | None, work: Path) -> tuple[float, Journal]:
    run_dir = work / "executor-run"
    run_dir.mkdir()
    manifest = work / "bench.yaml"
    manifest.write_bytes(b"version: 1\nname: bench\n")
    plan = Plan(manifest_path=manifest, manifest_bytes=manifest.read_bytes(), name="bench",
                jobs=tuple(jobs))
    names = {job.key: output_names(plan, job) for job in jobs}
    journal = Journal.create(run_dir / "journal.sqlite", jobs, {"name": "bench"})
    executor = Executor(run_dir=run_dir, journal=journal, jobs=jobs, output_names=names,
                        providers={"wiro": provider},
                        limits={"wiro": EffectiveLimits(concurrency, rpm)},
                        options=ExecutorOptions())
    t0 = time.monotonic()
    outcome = await executor.run()
    makespan = time.monotonic() - t0
    if outcome.counts["succeeded"] != len(jobs):
        raise SystemExit(f"executor: not every job succeeded: {outcome.counts}")
    await provider.aclose()
    return makespan, journal


def bench_executor(args: argparse.Namespace, server: Any, work: Path) -> dict[str, Any]:
    jobs = make_jobs(args.jobs)
    provider = provider_for(server, args.concurrency, realtime=args.realtime == "on")
    with CpuMeter() as cpu:
        makespan, journal = asyncio.run(_run_executor(provider, jobs, args.concurrency,
                                                      args.rpm, work))
    polls = [r.polls for r in journal.jobs()]
    journal.close()
    out = figures(args.jobs, makespan, lower_bound(args.jobs, args.latency, args.concurrency,
                                                   args.rpm),
                  dict(provider.requests_sent), cpu, args.jobs)  # type: ignore[attr-defined]
    out["polls_max"] = max(polls)
    return out


# -- baselines ----------------------------------------------------------------------------------

async def _download(provider: Provider, url: str, dest: Path) -> None:
    async with provider.stream(url) as response, aiofiles.open(dest, "wb") as fh:
        async for block in response.aiter_bytes(65536):
            await fh.write(block)


async def _submit_retrying(provider: Provider, job: Job) -> str:
    while True:
        try:
            return (await provider.submit(job)).task_id
        except (TransientError, UnknownOutcome):  # a simple script just tries again
            await asyncio.sleep(1.0)


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """What a simple script does: on a transient error, wait a second and try again."""
    while True:
        try:
            return await call()
        except TransientError:
            await asyncio.sleep(1.0)


Interval = Callable[[float], float]  # seconds since the submit's answer → wait before a poll


def every(seconds: float) -> Interval:
    return lambda _elapsed: seconds


def wiro_client_interval(elapsed: float) -> float:
    """Wiro's official client (Wiro-MCP src/client.ts): every 2 s for the first 15 s, every
    5 s up to 60 s, then every 10 s."""
    if elapsed < 15:
        return 2.0
    if elapsed < 60:
        return 5.0
    return 10.0


async def _naive_job(provider: Provider, job: Job, interval: Interval, dest: Path) -> None:
    task_id = await _submit_retrying(provider, job)
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(interval(time.monotonic() - t0))
        status = await _retrying(lambda: provider.poll(task_id))
        if status.state.terminal:
            break
    if status.state is TaskState.SUCCEEDED:
        for i, out in enumerate(status.outputs):
            await _retrying(lambda out=out, i=i: _download(provider, out.url,
                                                           dest / f"{job.name}-{i}.png"))


async def _naive(provider: Provider, jobs: list[Job], concurrency: int, interval: Interval,
                 dest: Path) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(job: Job) -> None:
        async with sem:
            await _naive_job(provider, job, interval, dest)

    t0 = time.monotonic()
    await asyncio.gather(*(one(j) for j in jobs))
    elapsed = time.monotonic() - t0
    await provider.aclose()
    return elapsed


def bench_baseline(name: str, runner: Callable[[Provider, list[Job]], Awaitable[float]],
                   n_total: int, n_measured: int, server: Any, concurrency: int,
                   lb: float, offset: int) -> dict[str, Any]:
    jobs = make_jobs(offset + n_measured)[offset:]
    provider = provider_for(server, concurrency)
    with CpuMeter() as cpu:
        elapsed = asyncio.run(runner(provider, jobs))
    scale = n_total / n_measured
    out = figures(n_measured, elapsed * scale, lb, dict(provider.requests_sent),  # type: ignore[attr-defined]
                  cpu, n_measured)
    out["measured_jobs"] = n_measured
    out["measured_s"] = round(elapsed, 3)
    out["extrapolated"] = n_measured < n_total
    if out["extrapolated"]:
        out["note"] = (f"measured on {n_measured} jobs, makespan extrapolated linearly "
                       f"×{scale:g} to {n_total}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--latency", type=float, default=2.0, help="emulated task seconds")
    ap.add_argument("--jitter", type=float, default=0.0, help="± fraction of latency")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rpm", type=float, default=None,
                    help="requests per minute cap (default: none)")
    ap.add_argument("--baseline-jobs", type=int, default=None,
                    help="jobs measured for the fixed-2s baseline (default: all)")
    ap.add_argument("--sequential-jobs", type=int, default=10,
                    help="jobs measured for the sequential baseline")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--realtime", choices=("on", "off"), default="on",
                    help="the executor's Wiro client takes completion from the websocket "
                         "(on) or polls (off)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--emulator", choices=("process", "thread"), default="process",
                    help="serve the emulator from a process of its own (the client's CPU "
                         "measured alone) or from a thread of this one")
    args = ap.parse_args(argv)
    cfg = EmulatorConfig(latency=args.latency, jitter=args.jitter,
                         concurrency=max(args.concurrency, 1), image_size="small", seed=1)
    lb = lower_bound(args.jobs, args.latency, args.concurrency, args.rpm)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="seedbatch-bench-"))
        work = Path(tmp)
        if args.emulator == "thread":
            server = stack.enter_context(serve(cfg))
        else:
            server = stack.enter_context(emulator_process(work, [
                "--latency", str(args.latency), "--jitter", str(args.jitter),
                "--concurrency", str(cfg.concurrency), "--image-size", "small", "--seed",
                "1"]))
        result: dict[str, Any] = {
            "jobs": args.jobs, "latency_s": args.latency, "jitter": args.jitter,
            "concurrency": args.concurrency, "rpm": args.rpm, "realtime": args.realtime,
            "emulator": args.emulator,
        }
        reference_before = reference_cpu_ms()
        emulator_cpu0 = server.cpu_seconds() if args.emulator == "process" else 0.0
        result.update(bench_executor(args, server, work))
        if args.emulator == "process":
            # the emulator's own process during the executor's run (not the baselines')
            result["emulator_cpu_ms_per_job"] = round(
                (server.cpu_seconds() - emulator_cpu0) * 1000 / args.jobs, 3)
            # The emulator's code is the same in every run: the client's CPU relative to it
            # compares code across runs made while this shared machine ran at other speeds.
            if result["emulator_cpu_ms_per_job"]:
                result["client_to_emulator_cpu"] = round(
                    result["cpu_ms_per_job"] / result["emulator_cpu_ms_per_job"], 3)
        result["reference_cpu_ms"] = [reference_before, reference_cpu_ms()]
        print(f"executor: makespan {result['makespan_s']} s, ratio {result['ratio']}, "
              f"{result['polls_per_task']} polls/task", file=sys.stderr)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                      / 1024, 1)
        baselines: dict[str, Any] = {}
        if not args.no_baselines:
            dest = work / "baseline-outputs"
            dest.mkdir()
            seq_n = max(1, min(args.sequential_jobs, args.jobs))
            baselines["sequential"] = bench_baseline(
                "sequential", lambda p, js: _naive(p, js, 1, every(1.0), dest), args.jobs, seq_n,
                server, 1, lb, offset=args.jobs)
            fixed_n = max(1, min(args.baseline_jobs or args.jobs, args.jobs))
            baselines["fixed_2s"] = bench_baseline(
                "fixed_2s", lambda p, js: _naive(p, js, args.concurrency, every(2.0), dest),
                args.jobs, fixed_n, server, args.concurrency, lb,
                offset=args.jobs + seq_n)
            baselines["wiro_client"] = bench_baseline(
                "wiro_client",
                lambda p, js: _naive(p, js, args.concurrency, wiro_client_interval, dest),
                args.jobs, fixed_n, server, args.concurrency, lb,
                offset=args.jobs + seq_n + fixed_n)
        result["baselines"] = baselines
        stats = server.stats()
        result["emulator_stats"] = {"tasks_created": stats["tasks_created_total"],
                              "duplicate_paid": stats["duplicate_paid"],
                              "rejections": stats["rejections"], "push": stats["push"]}
        result["machine"] = machine()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.jobs} jobs, latency {args.latency} s, concurrency {args.concurrency}: "
              f"makespan {result['makespan_s']} s vs lower bound {result['lower_bound_s']} s "
              f"(ratio {result['ratio']}), {result['polls_per_task']} polls/task, "
              f"{result['requests_per_job']} requests/job, {result['cpu_ms_per_job']} ms CPU/job,"
              f" peak RSS {result['peak_rss_mb']} MB")
        for name, b in baselines.items():
            print(f"  {name}: makespan {b['makespan_s']} s (ratio {b['ratio']}), "
                  f"{b['polls_per_task']} polls/task" + (f" — {b['note']}" if b.get("note")
                                                         else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
