"""Benchmark: load, validate, expand and plan an N-job sweep manifest.

    python bench/expand.py --jobs 100000 --json
    python bench/expand.py --jobs 100000 --cli --json

writes a sweep manifest (two models × subjects × lights × styles × repeat) to a temporary
folder, plans it with :func:`runner.manifest.load_plan` and prints jobs, seconds, jobs per
second and the process's peak resident memory. With ``--cli`` it times the whole command
``seedbatch plan MANIFEST --json --yes`` instead, in a process of its own (interpreter
start-up, imports, planning and every byte of JSON, written to a file): wall seconds, the
child's user CPU seconds, its peak resident memory and the output's size.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner.manifest import load_plan  # noqa: E402

LIGHTS = ["golden hour", "overcast", "noon", "dusk", "neon", "studio", "candle", "fog",
          "moonlight", "backlit"]
STYLES = ["photo", "watercolor", "isometric", "clay", "line art"]
REPEAT = 5


def sweep_manifest(jobs: int) -> tuple[str, int]:
    """Manifest text with about ``jobs`` jobs, and the exact number it expands to."""
    per_subject = 2 * len(LIGHTS) * len(STYLES) * REPEAT
    subjects = max(1, math.ceil(jobs / per_subject))
    subject_list = ", ".join(f"subject{i:05d}" for i in range(subjects))
    text = f"""\
# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
name: bench-sweep
vars:
  brand: Acme Outdoor
matrix:
  subject: [{subject_list}]
  light: [{", ".join(LIGHTS)}]
  style: [{", ".join(STYLES)}]
models:
  v4: {{model: wiro/seedream-v4, params: {{size: 2048x2048}}}}
  pix: {{model: pixwith/seedream-4.5, params: {{resolution: 2K, aspect_ratio: "16:9"}}}}
prompts:
  hero: "{{{{ brand }}}} {{{{ subject }}}} at {{{{ light }}}}, {{{{ style }}}}"
jobs:
  - name: >-
      {{{{ subject }}}}-{{{{ light | slug }}}}-{{{{ style | slug }}}}-{{{{
      model.alias }}}}-{{{{ index }}}}
    model: [v4, pix]
    prompt: "{{{{ prompts.hero }}}}"
    repeat: {REPEAT}
"""
    return text, subjects * per_subject


def run(jobs: int) -> dict[str, float | int]:
    text, _expected = sweep_manifest(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(text, encoding="utf-8")
        start = time.perf_counter()
        plan = load_plan(path)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    n = len(plan.jobs)
    return {"jobs": n, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds),
            "peak_rss_mb": round(peak / 1024, 1)}


def run_cli(jobs: int) -> dict[str, float | int]:
    text, expected = sweep_manifest(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(text, encoding="utf-8")
        out = Path(tmp) / "plan.json"
        with out.open("wb") as fh:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "runner", "plan", str(path), "--json", "--yes",
                            "--runs-dir", str(Path(tmp) / "runs")],
                           stdout=fh, check=True, cwd=ROOT)
            seconds = time.perf_counter() - start
        size = out.stat().st_size
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"jobs": expected, "seconds": round(seconds, 3),
            "user_s": round(child.ru_utime, 3), "peak_rss_mb": round(child.ru_maxrss / 1024, 1),
            "output_mb": round(size / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="about how many jobs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cli", action="store_true",
                        help="time the whole `seedbatch plan --json --yes` process")
    args = parser.parse_args(argv)
    if args.cli:
        from benchlib import reference_cpu_ms  # (a script's import: the tests load this file)

        reference_before = reference_cpu_ms()
        result = run_cli(args.jobs)
        result["reference_cpu_ms"] = [reference_before, reference_cpu_ms()]
        print(json.dumps(result) if args.json else
              f"seedbatch plan --json --yes: {result['jobs']:,} jobs in {result['seconds']} s "
              f"({result['user_s']} s user), peak RSS {result['peak_rss_mb']} MiB, "
              f"{result['output_mb']} MB of JSON")
        return 0
    result = run(args.jobs)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['jobs']:,} jobs planned in {result['seconds']} s "
              f"({result['jobs_per_s']:,} jobs/s), peak RSS {result['peak_rss_mb']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
