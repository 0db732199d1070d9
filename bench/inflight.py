"""Client memory and CPU with every job of a large run in flight at once.

    python bench/inflight.py --jobs 10000 --json

Serves the emulator in a *separate process* (``python -m runner emulate --port 0 --latency S
--concurrency N``), so every figure is the client's alone. Writes a manifest of N jobs,
half Wiro Seedream 4.0, half Pixwith Seedream 4.5, whose limits allow N tasks in flight
per provider and practically any request rate; plans it with :func:`runner.api.prepare`;
then runs the real executor (journal, limits, polling policy, provider clients over HTTP,
streamed downloads) in this process. The emulator's latency is long enough that every task
is submitted before the first one finishes.

Figures: ``in_flight_peak`` (the most tasks the emulator had unfinished at once, both
accounts together), ``peak_rss_mb`` (this process's peak resident memory, ``ru_maxrss``),
``baseline_rss_mb`` (resident memory after planning, before the first submit),
``rss_per_job_kb`` (the difference per job in flight), ``cpu_ms_per_job`` (this process's
user + system CPU during the execution, ``getrusage``, per job),
``emulator_cpu_ms_per_job`` (the emulator process's, over the same span), ``makespan_s``
(first submit to last download), ``requests_per_job``, ``timeline`` (seconds from the first
submit to the last submit, and to the first, median and last job ends, from the journal),
``rss_sampled`` (the resident memory sampled every 0.1 s: its peak, when, and when the most
jobs were in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import clean_env, emulator_process, machine, reference_cpu_ms  # noqa: E402

from runner import api  # noqa: E402
from runner.config import demo_credentials, resolve  # noqa: E402
from runner.execute.executor import Executor  # noqa: E402
from runner.execute.journal import JobState, Journal  # noqa: E402
from runner.providers import make_provider  # noqa: E402

IN_FLIGHT = (JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def manifest_text(jobs: int) -> str:
    half = jobs // 2
    values = ", ".join(str(i) for i in range(half))
    return f"""\
version: 1
name: inflight
matrix:
  i: [{values}]
models:
  v4:  {{model: wiro/seedream-v4, params: {{size: 1024x1024}}}}
  pix: {{model: pixwith/seedream-4.5, params: {{resolution: 2K, aspect_ratio: "1:1"}}}}
jobs:
  - name: "{{{{ model.alias }}}}-{{{{ i }}}}"
    model: [v4, pix]
    prompt: "in flight {{{{ i }}}}"
limits:
  wiro: {{concurrency: {jobs}, requests_per_minute: 100000000}}
  pixwith: {{concurrency: {jobs}, requests_per_minute: 100000000}}
"""


def raise_fd_limit() -> int:
    """Every task in flight may hold a connection: allow as many open files as permitted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Sampler:
    """Resident memory and jobs in flight, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.rss_peak_kb = 0
        self.in_flight_peak = 0
        self.executor: Executor | None = None
        self.timeline: dict[str, float] = {}
        self.rss_peak_at = 0.0  # seconds after the sampler started
        self.rss_all_in_flight_kb = 0  # when the most jobs were in flight
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def rss_kb() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KB

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.interval):
            rss = self.rss_kb()
            if rss > self.rss_peak_kb:
                self.rss_peak_kb, self.rss_peak_at = rss, time.monotonic() - start
            ex = self.executor
            if ex is not None:
                states = list(ex._state.values())
                in_flight = sum(1 for s in states if s in IN_FLIGHT)
                if in_flight > self.in_flight_peak:
                    self.in_flight_peak, self.rss_all_in_flight_kb = in_flight, rss

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timeline(path: Path) -> dict[str, float]:
    """When the submits and the ends happened, in seconds from the first submit: the
    makespan is the latency plus what the client adds at either end. Two columns read
    straight from the journal's file, not its records: the bench's peak RSS is the run's."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT submitted_at, finished_at FROM jobs").fetchall()
    finally:
        conn.close()
    submitted = sorted(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
                       for s, _ in rows if s)
    finished = sorted(datetime.fromisoformat(f.replace("Z", "+00:00")).timestamp()
                      for _, f in rows if f)
    if not submitted or not finished:
        return {}
    start = submitted[0]
    return {"last_submit_s": round(submitted[-1] - start, 2),
            "first_end_s": round(finished[0] - start, 2),
            "median_end_s": round(finished[len(finished) // 2] - start, 2),
            "last_end_s": round(finished[-1] - start, 2)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_executor(prepared: api.Prepared, run_dir: Path, base_urls: dict[str, str],
                       sampler: Sampler, push_urls: dict[str, str] | None = None,
                       ) -> tuple[float, dict[str, int], dict[str, int]]:
    env = {**clean_env(), **demo_credentials()}
    providers = {}
    for name in prepared.providers:
        settings = resolve(name, prepared.plan.providers, env, demo=True,
                           base_url=base_urls[name], push_url=(push_urls or {}).get(name))
        providers[name] = make_provider(settings,
                                        concurrency=prepared.limits[name].concurrency)
    journal = Journal.create(run_dir / "journal.sqlite", list(prepared.selected),
                             {"name": prepared.plan.name})
    executor = Executor(run_dir=run_dir, journal=journal, jobs=prepared.selected,
                        output_names=prepared.names, providers=providers,
                        limits=prepared.limits)
    sampler.executor = executor
    t0 = time.monotonic()
    try:
        outcome = await executor.run()
    finally:
        for provider in providers.values():
            await provider.aclose()
        journal.close()
    makespan = time.monotonic() - t0
    sampler.timeline = timeline(run_dir / "journal.sqlite")
    requests: dict[str, int] = {}
    for provider in providers.values():
        for kind, n in provider.requests_sent.items():  # type: ignore[attr-defined]
            requests[kind] = requests.get(kind, 0) + n
    return makespan, outcome.counts, requests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10000, help="jobs (split between providers)")
    ap.add_argument("--latency", type=float, default=None,
                    help="emulated task seconds, long enough to submit every job before the "
                         "first ends (default: 12 ms per job, at least 20 s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--realtime", choices=("on", "off"), default="on",
                    help="Wiro's completion from the emulator's websocket (on) or polled")
    args = ap.parse_args(argv)
    jobs = args.jobs - args.jobs % 2
    latency = args.latency if args.latency is not None else max(20.0, 0.012 * jobs)
    fds = raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="seedbatch-inflight-") as tmp:
        work = Path(tmp)
        manifest = work / "inflight.yaml"
        manifest.write_text(manifest_text(jobs), encoding="utf-8")
        emu_args = ["--latency", str(latency), "--concurrency", str(jobs),
                    "--credits", str(6 * jobs + 6), "--seed", "1"]
        with emulator_process(work, emu_args) as emu:
            base_urls = {"wiro": f"{emu.url}/wiro/v1", "pixwith": f"{emu.url}/pixwith/api"}
            env = {**clean_env(), **demo_credentials()}
            prepared = api.prepare(manifest, env=env, runs_dir=work / "runs")
            assert len(prepared.selected) == jobs
            run_dir = work / "run"
            (run_dir / "outputs").mkdir(parents=True)
            baseline_kb = Sampler.rss_kb()
            reference_before = reference_cpu_ms()
            with Sampler() as sampler:
                cpu0, emulator_cpu0 = cpu_seconds(), emu.cpu_seconds()
                makespan, counts, requests = asyncio.run(
                    run_executor(prepared, run_dir, base_urls, sampler,
                                 {"wiro": emu.wiro_push_url} if args.realtime == "on" else {}))
                cpu, emulator_cpu = cpu_seconds() - cpu0, emu.cpu_seconds() - emulator_cpu0
            stats = emu.stats()
            reference = [reference_before, reference_cpu_ms()]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    in_flight_peak = sum(stats["inflight_tasks_peak"].values())
    result: dict[str, Any] = {
        "jobs": jobs,
        "in_flight_peak": in_flight_peak,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_ms_per_job": round(cpu * 1000 / jobs, 3),
        "emulator_cpu_ms_per_job": round(emulator_cpu * 1000 / jobs, 3),
        "makespan_s": round(makespan, 2),
        "baseline_rss_mb": round(baseline_kb / 1024, 1),
        "rss_per_job_kb": round((peak_kb - baseline_kb) / max(1, in_flight_peak), 2),
        "client_in_flight_peak": sampler.in_flight_peak,
        "latency_s": latency,
        "succeeded": counts.get("succeeded", 0),
        "requests_per_job": round(sum(requests.values()) / jobs, 3),
        "timeline": sampler.timeline,
        "rss_sampled": {"peak_mb": round(sampler.rss_peak_kb / 1024, 1),
                        "peak_at_s": round(sampler.rss_peak_at, 1),
                        "most_in_flight_mb": round(sampler.rss_all_in_flight_kb / 1024, 1)},
        "requests": requests,
        "emulator": {"tasks_created": stats["tasks_created_total"],
                     "tasks_billed": stats["tasks_billed"],
                     "duplicate_paid": stats["duplicate_paid"],
                     "inflight_requests_peak": stats["inflight_requests_peak"],
                     "rejections": stats["rejections"]},
        "open_files_limit": fds,
        "reference_cpu_ms": reference,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{jobs} jobs, {in_flight_peak} in flight at once: peak RSS "
              f"{result['peak_rss_mb']} MB (baseline {result['baseline_rss_mb']} MB, "
              f"{result['rss_per_job_kb']} KB per job in flight), {result['cpu_ms_per_job']} "
              f"ms CPU per job, makespan {result['makespan_s']} s")
    return 0 if counts.get("succeeded", 0) == jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
