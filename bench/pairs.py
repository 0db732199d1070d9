"""Alternate two (or more) benchmark commands and compare their CPU figures fairly.

    B="--jobs 1000 --latency 1 --concurrency 32 --no-baselines --json"
    git worktree add ../before HEAD~1
    python bench/pairs.py --rounds 3 --gap 30 \\
        "before=cd ../before && python bench/throughput.py $B" \\
        "after=python bench/throughput.py $B"

Each command must print one JSON object with ``cpu_ms_per_job`` and
``emulator_cpu_ms_per_job`` (bench/throughput.py and bench/inflight.py do). The commands run
one after another, ``--gap`` seconds apart, ``--rounds`` times. On a shared machine whose
speed moves by tens of percent between runs, the figure compared is the client's CPU per
job divided by the emulator's in the same run (the emulator's code being the same on both
sides): its median per command is printed at the end, with the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("commands", nargs="+", metavar="LABEL=COMMAND",
                    help="a label and a shell command printing the benchmark's JSON")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap", type=float, default=30.0,
                    help="seconds between runs (ext4 without a journal is slow to allocate "
                         "inodes for a while after a run deletes its files)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    variants: list[tuple[str, str]] = []
    for item in args.commands:
        label, sep, command = item.partition("=")
        if not sep or not label or not command:
            ap.error(f"{item!r}: say LABEL=COMMAND")
        variants.append((label, command))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in variants}
    for round_no in range(args.rounds):
        for label, command in variants:
            if round_no or label != variants[0][0]:
                time.sleep(args.gap)
            done = subprocess.run(command, shell=True, capture_output=True, text=True,
                                  cwd=ROOT, check=False)
            try:
                doc = json.loads(done.stdout)
                cpu, emu = float(doc["cpu_ms_per_job"]), float(doc["emulator_cpu_ms_per_job"])
            except (ValueError, KeyError, TypeError):
                print(f"{label}: no figures (exit {done.returncode}):\n{done.stderr[-2000:]}",
                      file=sys.stderr)
                continue
            runs[label].append({"cpu_ms_per_job": cpu, "emulator_cpu_ms_per_job": emu,
                                "relative": round(cpu / emu, 4)})
            print(f"round {round_no + 1} {label}: client {cpu} ms, emulator {emu} ms, "
                  f"client/emulator {cpu / emu:.3f}", file=sys.stderr)
    summary = {label: {"median_relative": round(statistics.median(r["relative"] for r in rs), 4)
                       if rs else None, "runs": rs} for label, rs in runs.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for label, item in summary.items():
            print(f"{label}: median client/emulator CPU {item['median_relative']} "
                  f"over {len(item['runs'])} runs")
    return 0 if all(runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
