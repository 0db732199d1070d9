"""Memory of a large download: does the client's peak memory grow with the image's size?

    python bench/download.py --mb 50 --json

For each size (the baseline, 1 MB by default, then ``--mb``), a fresh emulator process
serves outputs padded to that size (``python -m runner emulate --pad-bytes N``), and a
fresh client process runs one job through the real executor — submit, poll, then the
streamed download (``runner.execute.download``: 64 KB chunks, hashed while written, fsync,
atomic rename) — and reports its own peak resident memory (``ru_maxrss``). Fresh processes
keep each peak clean: nothing from the other size, nothing from the emulator.

Figures: ``mb`` and ``bytes`` (the output as downloaded), ``seconds`` (the download alone,
from the journal's ``downloading`` record to its ``output`` record), ``peak_rss_mb`` (the
client with the big output), ``baseline_peak_rss_mb`` (the client with the baseline
output), ``rss_growth_mb`` (their difference) and ``mb_per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import clean_env, emulator_process  # noqa: E402

MB = 1024 * 1024


# -- the client (a fresh process per size) ------------------------------------------------------

def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _one_job(base_url: str, work: Path) -> dict[str, Any]:
    from runner.catalog import models as installed_models
    from runner.config import demo_credentials, resolve
    from runner.execute.executor import Executor
    from runner.execute.journal import Journal
    from runner.execute.limits import EffectiveLimits
    from runner.jobs import Estimate, Job, Plan, job_key
    from runner.providers import make_provider
    from runner.rundir import output_names

    model = "wiro/seedream-v4"
    params = installed_models()[model].with_defaults({"size": "1024x1024"})
    prompt = f"a large download {time.time_ns()}"
    job = Job(key=job_key(model, prompt, params, (), 0), name="large", alias="v4",
              model=model, provider="wiro", prompt=prompt, params=params,
              estimate=Estimate(1, 0.03, 0.0))
    manifest = work / "download.yaml"
    manifest.write_bytes(b"version: 1\nname: download\n")
    plan = Plan(manifest_path=manifest, manifest_bytes=manifest.read_bytes(), name="download",
                jobs=(job,))
    run_dir = work / "run"
    (run_dir / "outputs").mkdir(parents=True)
    settings = resolve("wiro", None, {**clean_env(), **demo_credentials()}, demo=True,
                       base_url=base_url)
    provider = make_provider(settings, concurrency=1)
    journal = Journal.create(run_dir / "journal.sqlite", [job], {"name": "download"})
    try:
        executor = Executor(run_dir=run_dir, journal=journal, jobs=[job],
                            output_names={job.key: output_names(plan, job)},
                            providers={"wiro": provider},
                            limits={"wiro": EffectiveLimits(1, None)})
        outcome = await executor.run()
        if outcome.counts.get("succeeded") != 1:
            raise SystemExit(f"the job did not succeed: {journal.jobs()[0].error}")
        out = journal.outputs(job.key)[0]
        started = next(e.ts for e in journal.events(job.key) if e.state == "downloading")
        finished = next(e.ts for e in journal.events(job.key, kind="output"))
        return {"bytes": out.bytes, "seconds": round(_ts(finished) - _ts(started), 3),
                "sha256": out.sha256}
    finally:
        journal.close()
        await provider.aclose()


def child(base_url: str) -> int:
    with tempfile.TemporaryDirectory(prefix="seedbatch-download-") as tmp:
        result = asyncio.run(_one_job(base_url, Path(tmp)))
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))
    return 0


# -- the parent ---------------------------------------------------------------------------------

def measure(mb: float, work: Path) -> dict[str, Any]:
    pad = int(mb * MB)
    args = ["--latency", "0.2", "--pad-bytes", str(pad)]
    with emulator_process(work, args, f"emulator-{pad}.log") as emu:
        url = emu.url
        done = subprocess.run([sys.executable, __file__, "--child", f"{url}/wiro/v1"],
                              cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                              timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the client failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the large output (MiB)")
    ap.add_argument("--baseline-mb", type=float, default=1.0, help="size to compare with")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", metavar="WIRO_BASE_URL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child)
    with tempfile.TemporaryDirectory(prefix="seedbatch-download-bench-") as tmp:
        work = Path(tmp)
        base = measure(args.baseline_mb, work)
        big = measure(args.mb, work)
    peak = big["peak_rss_kb"] / 1024
    baseline = base["peak_rss_kb"] / 1024
    result = {
        "mb": args.mb,
        "bytes": big["bytes"],
        "seconds": big["seconds"],
        "peak_rss_mb": round(peak, 1),
        "baseline_peak_rss_mb": round(baseline, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "baseline_mb": args.baseline_mb,
        "baseline_bytes": base["bytes"],
        "mb_per_s": round(big["bytes"] / MB / big["seconds"], 1) if big["seconds"] else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['bytes']:,} bytes in {result['seconds']} s: client peak RSS "
              f"{result['peak_rss_mb']} MB vs {result['baseline_peak_rss_mb']} MB for "
              f"{result['baseline_bytes']:,} bytes (growth {result['rss_growth_mb']} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
