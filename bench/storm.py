"""How fast throughput recovers after a storm of 429s.

    python bench/storm.py --json
    python bench/storm.py --storm 12 --json

Serves the emulator in a *separate process* (``python -m runner emulate --port 0 --latency
S``, its concurrency four times the client's, so no code 96 comes back) and runs the real
executor (journal, limits, polling policy, Wiro client over HTTP, streamed downloads) in this
process on a manifest of Seedream 4.0 jobs at ``--concurrency C``. Timeline, from the first
submit: ``--before`` seconds without faults; then the storm — ``POST /__faults`` sets
``--storm-faults`` (``429=0.5`` by default: half of all API calls, submits and polls alike,
answer 429, each with no ``Retry-After``, 1 s or 2 s at random) for ``--storm`` seconds;
then faults off, and ``--after`` seconds of observation, at the end of which the run is
interrupted (no new submits; the tasks in flight finish). The manifest holds enough jobs to
last that long at full speed.

Every job's completion is timestamped (a progress sink), the provider's in-flight target is
sampled every 0.1 s, and every ``on_limited`` call is recorded (target before and after,
cool-down after). Figures (jobs/s count succeeded jobs):

* ``throughput_before`` — from ``warmup`` to the storm's start; ``throughput_during`` — the
  storm; ``throughput_after`` — the whole ``--after`` window; ``throughput_after_10s`` /
  ``_30s`` — its first 10 / 30 seconds;
* ``recovery_s`` — seconds from the storm's end until the first ``--window``-second window
  whose throughput is ≥ 90 % of ``throughput_before`` (``null``: not within ``--after``);
* ``target_recovered_s`` — seconds from the storm's end until the target is back at the
  cap for good; ``target_min``; ``lowerings`` — ``on_limited`` calls that lowered the
  target; ``rejections`` — ``on_limited`` calls; ``cooldown_max_s`` — the longest cool-down
  set; ``timeline`` — jobs/s and the lowest target per ``--bin``-second bin (``t``: its
  start, in seconds from the storm's start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import clean_env, emulator_process, machine  # noqa: E402

from runner import api  # noqa: E402
from runner.config import demo_credentials, resolve  # noqa: E402
from runner.execute.executor import Executor, ExecutorOptions  # noqa: E402
from runner.execute.journal import Journal  # noqa: E402
from runner.execute.limits import AdaptiveSlots  # noqa: E402
from runner.providers import make_provider  # noqa: E402


def manifest_text(jobs: int, concurrency: int) -> str:
    values = ", ".join(str(i) for i in range(jobs))
    return f"""\
version: 1
name: storm
matrix:
  i: [{values}]
models:
  v4: {{model: wiro/seedream-v4, params: {{size: 1024x1024}}}}
jobs:
  - name: "storm-{{{{ i }}}}"
    model: v4
    prompt: "storm {{{{ i }}}}"
limits:
  wiro: {{concurrency: {concurrency}, requests_per_minute: 100000000}}
"""


class Recorder:
    """A progress sink that timestamps every job that succeeds."""

    def __init__(self) -> None:
        self.done: list[float] = []

    def start(self, total: int, counts: Mapping[str, int]) -> None:
        pass

    def job_state(self, name: str, state: str, detail: str = "") -> None:
        if state == "succeeded":
            self.done.append(time.monotonic())

    def update(self, counts: Mapping[str, int], spent_usd: float,
               spent_credits: float) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Trace:
    """What the provider's AdaptiveSlots did: samples of the target, every on_limited call."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, target, in_use
    limited: list[tuple[float, int, int, float]] = field(default_factory=list)  # t, before,
    # after, cool-down

    def watch(self, slots: AdaptiveSlots) -> None:
        original = slots.on_limited

        def on_limited(*, concurrency: bool) -> None:
            before = slots.target
            original(concurrency=concurrency)
            self.limited.append((time.monotonic(), before, slots.target, slots.cooldown))

        slots.on_limited = on_limited  # type: ignore[method-assign]

    async def sample(self, slots: AdaptiveSlots, interval: float = 0.1) -> None:
        while True:
            self.samples.append((time.monotonic(), slots.target, slots.in_use))
            await asyncio.sleep(interval)


@dataclass
class Marks:
    t0: float = 0.0
    storm_start: float = 0.0
    storm_end: float = 0.0
    stopped: float = 0.0


async def set_faults(client: httpx.AsyncClient, url: str, spec: str) -> None:
    response = await client.post(f"{url}/__faults", json={"faults": spec})
    response.raise_for_status()


async def control(executor: Executor, emulator_url: str, marks: Marks, args: Any) -> None:
    """Storm on at ``before``, off ``storm`` seconds later; interrupt ``after`` seconds on."""
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.sleep(max(0.0, marks.t0 + args.before - time.monotonic()))
        await set_faults(client, emulator_url, args.storm_faults)
        marks.storm_start = time.monotonic()
        await asyncio.sleep(max(0.0, marks.storm_start + args.storm - time.monotonic()))
        await set_faults(client, emulator_url, "none")
        marks.storm_end = time.monotonic()
    await asyncio.sleep(max(0.0, marks.storm_end + args.after - time.monotonic()))
    marks.stopped = time.monotonic()
    executor.interrupt()


async def run(prepared: api.Prepared, run_dir: Path, emulator_url: str, args: Any,
              recorder: Recorder, trace: Trace, marks: Marks) -> dict[str, int]:
    env = {**clean_env(), **demo_credentials()}
    settings = resolve("wiro", prepared.plan.providers, env, demo=True,
                       base_url=f"{emulator_url}/wiro/v1")
    provider = make_provider(settings, concurrency=prepared.limits["wiro"].concurrency)
    journal = Journal.create(run_dir / "journal.sqlite", list(prepared.selected),
                             {"name": prepared.plan.name})
    executor = Executor(run_dir=run_dir, journal=journal, jobs=prepared.selected,
                        output_names=prepared.names, providers={"wiro": provider},
                        limits=prepared.limits, progress=recorder,
                        options=ExecutorOptions(initial_guess={"wiro": args.latency}))
    slots = executor.lanes["wiro"].slots
    trace.watch(slots)
    sampler = asyncio.create_task(trace.sample(slots))
    marks.t0 = time.monotonic()
    controller = asyncio.create_task(control(executor, emulator_url, marks, args))
    try:
        outcome = await executor.run()
        if not controller.done():  # the jobs ran out before the observation ended
            controller.cancel()
        else:
            controller.result()
    finally:
        sampler.cancel()
        await provider.aclose()
        journal.close()
    return dict(outcome.counts)


def rate(done: list[float], start: float, end: float) -> float:
    if end <= start:
        return 0.0
    return sum(1 for t in done if start <= t < end) / (end - start)


def analyse(recorder: Recorder, trace: Trace, marks: Marks, args: Any,
            concurrency: int) -> dict[str, Any]:
    done = sorted(recorder.done)
    end = marks.stopped or (done[-1] if done else marks.storm_end)
    before = rate(done, marks.t0 + args.warmup, marks.storm_start)
    recovery = None
    t = marks.storm_end
    while t + args.window <= end + 1e-9:
        if rate(done, t, t + args.window) >= 0.9 * before:
            recovery = t - marks.storm_end
            break
        t += 0.1
    low_after = [s for s in trace.samples if s[0] >= marks.storm_end and s[1] < concurrency]
    last_low = max((s[0] for s in low_after), default=None)
    later = [s for s in trace.samples if last_low is not None and s[0] > last_low]
    if last_low is None:
        target_recovered = 0.0
    elif later:
        target_recovered = later[0][0] - marks.storm_end
    else:
        target_recovered = None  # still below the cap at the end
    timeline = []  # bins aligned on the storm's start; t: seconds from it
    edge = marks.storm_start - math.floor((marks.storm_start - marks.t0) / args.bin) * args.bin
    while edge < end:
        top = min(edge + args.bin, end)
        targets = [s[1] for s in trace.samples if edge <= s[0] < top]
        timeline.append({"t": round(edge - marks.storm_start, 1),
                         "jobs_per_s": round(rate(done, edge, top), 2),
                         "target_min": min(targets) if targets else None})
        edge = top
    lowerings = sum(1 for _, b, a, _ in trace.limited if a < b)
    return {
        "throughput_before": round(before, 2),
        "throughput_during": round(rate(done, marks.storm_start, marks.storm_end), 2),
        "throughput_after": round(rate(done, marks.storm_end, end), 2),
        "throughput_after_10s": round(rate(done, marks.storm_end,
                                           min(end, marks.storm_end + 10)), 2),
        "throughput_after_30s": round(rate(done, marks.storm_end,
                                           min(end, marks.storm_end + 30)), 2),
        "recovery_s": round(recovery, 1) if recovery is not None else None,
        "target_recovered_s": (round(target_recovered, 1) if target_recovered is not None
                               else None),
        "target_min": min((s[1] for s in trace.samples), default=concurrency),
        "lowerings": lowerings,
        "rejections": len(trace.limited),
        "rejections_after_storm": sum(1 for t, *_ in trace.limited if t >= marks.storm_end),
        "cooldown_max_s": max((c for *_, c in trace.limited), default=None),
        "storm_s": round(marks.storm_end - marks.storm_start, 2),
        "observed_after_s": round(end - marks.storm_end, 1),
        "timeline": timeline,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=8, help="tasks in flight (the cap)")
    ap.add_argument("--latency", type=float, default=1.0, help="emulated task seconds")
    ap.add_argument("--before", type=float, default=10.0, help="seconds before the storm")
    ap.add_argument("--storm", type=float, default=4.0, help="seconds of storm")
    ap.add_argument("--after", type=float, default=75.0,
                    help="seconds observed after the storm")
    ap.add_argument("--storm-faults", default="429=0.5", help="the emulator's faults during "
                                                              "the storm")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds at the start left out of throughput_before")
    ap.add_argument("--window", type=float, default=3.0,
                    help="seconds of the window recovery_s is judged on")
    ap.add_argument("--bin", type=float, default=5.0, help="seconds per timeline bin")
    ap.add_argument("--jobs", type=int, default=None,
                    help="jobs in the manifest (default: enough for the whole run at "
                         "full speed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.warmup >= args.before:
        ap.error("--warmup must be shorter than --before")
    total = args.before + args.storm + args.after
    jobs = args.jobs or math.ceil(1.5 * args.concurrency / args.latency * total)
    with tempfile.TemporaryDirectory(prefix="seedbatch-storm-") as tmp:
        work = Path(tmp)
        manifest = work / "storm.yaml"
        manifest.write_text(manifest_text(jobs, args.concurrency), encoding="utf-8")
        emu_args = ["--latency", str(args.latency), "--concurrency",
                    str(4 * args.concurrency), "--seed", "1"]
        with emulator_process(work, emu_args) as emu:
            env = {**clean_env(), **demo_credentials()}
            prepared = api.prepare(manifest, env=env, runs_dir=work / "runs")
            run_dir = work / "run"
            (run_dir / "outputs").mkdir(parents=True)
            recorder, trace, marks = Recorder(), Trace(), Marks()
            counts = asyncio.run(run(prepared, run_dir, emu.url, args, recorder, trace, marks))
            stats = emu.stats()
    if not marks.storm_end:
        raise SystemExit(f"the {jobs} jobs ran out before the storm ended: raise --jobs")
    result: dict[str, Any] = {
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "storm_faults": args.storm_faults,
        "before_s": args.before,
        "storm_s_asked": args.storm,
        "after_s": args.after,
        "jobs": jobs,
        **analyse(recorder, trace, marks, args, args.concurrency),
        "counts": counts,
        "emulator": {"http_429": stats["faults"].get("429", 0),
                     "requests_total": stats["requests_total"],
                     "tasks_created": stats["tasks_created_total"],
                     "duplicate_paid": stats["duplicate_paid"],
                     "rejections": stats["rejections"]},
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rec = result["recovery_s"]
        print(f"{args.storm:g} s of {args.storm_faults} at concurrency {args.concurrency}: "
              f"{result['throughput_before']} jobs/s before, {result['throughput_during']} "
              f"during, {result['throughput_after_10s']} in the first 10 s after; back to "
              f"90 % {'after ' + str(rec) + ' s' if rec is not None else 'never'}; "
              f"{result['lowerings']} lowerings of the target for {result['rejections']} "
              f"rejections, cool-down up to {result['cooldown_max_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
