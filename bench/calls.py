"""The CPU of the Wiro client's calls alone, per job and per phase, against the emulator.

    python bench/calls.py --jobs 1000 --json
    python bench/calls.py --jobs 1000 --realtime off --json

What ``bench/throughput.py`` reports as the client's CPU per job is the whole executor: the
provider's calls, the journal, the websocket's frames, the outputs written and synced, the
event loop's turns. This benchmark takes the same provider client (the one the executor
uses, over the same transport) without the executor, and splits what it costs:

* ``submit``: Wiro's Run (a signed multipart form), and with ``--realtime on`` the task's
  subscription on the websocket;
* ``frames``: with ``--realtime on``, the wait for every task's pushed end: the ~13 frames a
  task sends (stages and progress) read and filtered; with ``off``, a plain sleep;
* ``poll``: one Task/Detail per task (each has ended by then);
* ``download``: each output read whole from the emulator and dropped (no file).

The emulator runs in a process of its own (``--image-size small``, ``--latency``); jobs go
in batches of ``--batch`` (the emulated account runs at most 64 tasks at once), each phase
of a batch started together and timed with this process's CPU clock. Batching is kinder to
the client than the executor's steady flow (several answers per wake-up), so these are
floors under what the same calls cost inside a run.

Figures: ``<phase>_cpu_ms_per_job`` for each phase, ``calls_cpu_ms_per_job`` (their sum),
``emulator_cpu_ms_per_job``, ``reference_cpu_ms`` (the machine's speed, before and after:
see ``benchlib.reference_cpu_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import emulator_process, machine, reference_cpu_ms  # noqa: E402
from throughput import make_jobs, provider_for  # noqa: E402

from runner.providers.base import CompletionPush, Provider, TaskState  # noqa: E402

PHASES = ("submit", "frames", "poll", "download")


async def _download(provider: Provider, url: str) -> None:
    """Read the output whole and drop it."""
    async with provider.stream(url) as response:
        async for _block in response.aiter_bytes(65536):
            pass


async def measure(provider: Provider, jobs: int, batch: int, latency: float,
                  realtime: bool) -> dict[str, float]:
    """Process CPU seconds per phase over ``jobs`` jobs run ``batch`` at a time."""
    spent = dict.fromkeys(PHASES, 0.0)
    push = cast(CompletionPush, provider) if realtime else None
    every = make_jobs(jobs + 1)
    await provider.submit(every[0])  # connections and imports warm before the clock runs
    await asyncio.sleep(latency + 0.5)
    for start in range(1, jobs + 1, batch):
        group = every[start:start + batch]
        t = time.process_time()
        handles = await asyncio.gather(*(provider.submit(job) for job in group))
        spent["submit"] += time.process_time() - t
        ids = [handle.task_id for handle in handles]
        t = time.process_time()
        if push is not None:
            ended = await asyncio.gather(*(push.await_completion(task_id, latency * 4 + 5)
                                           for task_id in ids))
            if not all(ended):
                raise SystemExit(f"{ended.count(False)} task ends were not pushed")
        else:
            await asyncio.sleep(latency + 0.3)
        spent["frames"] += time.process_time() - t
        t = time.process_time()
        statuses = await asyncio.gather(*(provider.poll(task_id) for task_id in ids))
        spent["poll"] += time.process_time() - t
        if push is not None:
            for task_id in ids:
                push.forget(task_id)
        urls: list[str] = []
        for status in statuses:
            if status.state is not TaskState.SUCCEEDED:
                raise SystemExit(f"task {status.task_id} ended {status.state}")
            urls.extend(output.url for output in status.outputs)
        t = time.process_time()
        await asyncio.gather(*(_download(provider, url) for url in urls))
        spent["download"] += time.process_time() - t
    await provider.aclose()
    return spent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50,
                    help="jobs submitted together (the emulated account runs at most 64)")
    ap.add_argument("--latency", type=float, default=1.0, help="the emulator's seconds per task")
    ap.add_argument("--realtime", choices=("on", "off"), default="on",
                    help="subscribe each task on Wiro's websocket and wait for its pushed end")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if not 1 <= args.batch <= 64:
        ap.error("--batch must be between 1 and 64")
    realtime = args.realtime == "on"
    with tempfile.TemporaryDirectory(prefix="seedbatch-calls-") as tmp, \
            emulator_process(Path(tmp), ["--latency", str(args.latency), "--image-size", "small",
                                         "--concurrency", "64"]) as emulator:
        provider = provider_for(emulator, args.batch, realtime=realtime)
        reference_before = reference_cpu_ms()
        emulator_cpu0 = emulator.cpu_seconds()
        spent = asyncio.run(measure(provider, args.jobs, args.batch, args.latency, realtime))
        emulator_cpu = emulator.cpu_seconds() - emulator_cpu0
        result: dict[str, Any] = {"jobs": args.jobs, "batch": args.batch,
                                  "latency": args.latency, "realtime": args.realtime}
        for phase in PHASES:
            result[f"{phase}_cpu_ms_per_job"] = round(spent[phase] * 1000 / args.jobs, 3)
        result["calls_cpu_ms_per_job"] = round(sum(spent.values()) * 1000 / args.jobs, 3)
        result["emulator_cpu_ms_per_job"] = round(emulator_cpu * 1000 / args.jobs, 3)
        result["reference_cpu_ms"] = [reference_before, reference_cpu_ms()]
        result["machine"] = machine()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(", ".join(f"{phase} {result[f'{phase}_cpu_ms_per_job']} ms" for phase in PHASES)
              + f"; calls {result['calls_cpu_ms_per_job']} ms per job")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
