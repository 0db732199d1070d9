"""The shared output store: upload and download throughput, and what a store adds to a run.

    python bench/store.py --jobs 1000 --repeats 2 --json

* ``throughput``: ``--objects`` objects of ``--object-kib`` KiB (random bytes) uploaded to a
  fresh local store through the run's uploader (threads, retries, create-once writes), then
  fetched back and checked by sha256 as a run's store hits are; objects/s and MB/s each way.
* ``run``: a ``--jobs``-job manifest (Wiro Seedream 4.0) run through ``seedbatch``'s own
  ``runner.run`` against the emulator presented as a real host (in-process thread server on
  loopback, ``--latency`` seconds a task, ``--concurrency`` in flight), once with no store
  and once with a fresh local store (every output uploaded in the background, the run
  waiting for the last upload), alternating, ``--repeats`` times each. ``added_pct`` is the
  median wall time with the store over the median without, minus one (goal: at most 3 %).
  ``rebuild_s``: the same manifest run again with the filled store on a fresh runs folder
  (every job placed from the store, nothing submitted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchlib import machine  # noqa: E402

from runner import api  # noqa: E402
from runner.config import demo_credentials  # noqa: E402
from runner.emulator import EmulatorConfig, serve_in_thread  # noqa: E402
from runner.store.store import StoredOutput, StoreRecord, open_store  # noqa: E402
from runner.store.sync import fetch_hits  # noqa: E402
from runner.store.upload import Uploader, UploadItem  # noqa: E402


def manifest_text(jobs: int, concurrency: int) -> str:
    values = ", ".join(str(i) for i in range(jobs))
    return f"""version: 1
name: store-bench
matrix:
  i: [{values}]
models:
  v4: {{model: wiro/seedream-v4, params: {{size: 1024x1024}}}}
jobs:
  - name: "b-{{{{ i }}}}"
    model: v4
    prompt: "store benchmark image {{{{ i }}}}"
limits:
  wiro: {{concurrency: {concurrency}, requests_per_minute: 100000}}
"""


def throughput(work: Path, objects: int, kib: int) -> dict[str, Any]:
    store = open_store(str(work / "tp-store"))
    blobs = [os.urandom(kib * 1024) for _ in range(objects)]
    items = []
    for i, data in enumerate(blobs):
        path = work / f"blob-{i}.bin"
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        key = hashlib.sha256(f"job {i}".encode()).hexdigest()
        record = StoreRecord(key=key, name=f"j{i}", model="wiro/seedream-v4", provider="wiro",
                             run_id="bench", made_at="2026-01-01T00:00:00.000Z",
                             outputs=(StoredOutput(0, sha, len(data), "image/png"),))
        items.append(UploadItem(record, (path,)))
    t0 = time.perf_counter()
    summary = Uploader(store).run(items)
    up = time.perf_counter() - t0
    assert summary.stored == objects, summary.failed

    class _Job:
        def __init__(self, key: str) -> None:
            self.key, self.provider = key, "wiro"

    jobs = [_Job(item.record.key) for item in items]
    t0 = time.perf_counter()
    hits = fetch_hits(store, jobs)  # type: ignore[arg-type]
    down = time.perf_counter() - t0
    assert len(hits.hits) == objects
    hits.close()
    mb = objects * kib / 1024
    return {"objects": objects, "object_kib": kib,
            "upload_s": round(up, 3), "upload_objects_per_s": round(objects / up, 1),
            "upload_mb_per_s": round(mb / up, 1),
            "download_s": round(down, 3), "download_objects_per_s": round(objects / down, 1),
            "download_mb_per_s": round(mb / down, 1)}


def one_run(manifest: Path, runs: Path, env: dict[str, str], store: str | None) -> float:
    t0 = time.perf_counter()
    result = api.run(manifest, runs_dir=runs, env=env, store=store, quiet=True)
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.messages
    if store is not None and result.store is not None:
        assert not result.store.get("jobs_not_stored"), result.store
    return wall


def run_overhead(work: Path, jobs: int, latency: float, concurrency: int,
                 repeats: int) -> dict[str, Any]:
    manifest = work / "bench.yaml"
    manifest.write_text(manifest_text(jobs, concurrency), encoding="utf-8")
    cfg = EmulatorConfig(latency=latency, identify=False, concurrency=concurrency * 2)
    walls: dict[str, list[float]] = {"none": [], "local": []}
    rebuild = None
    with serve_in_thread(cfg) as server:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("WIRO_", "PIXWITH_", "SEEDBATCH_"))}
        env.update(demo_credentials())
        env["WIRO_BASE_URL"] = server.wiro_base_url
        for r in range(repeats):
            order = ("none", "local") if r % 2 == 0 else ("local", "none")
            for kind in order:
                store = str(work / f"store-{r}") if kind == "local" else None
                walls[kind].append(one_run(manifest, work / f"runs-{kind}-{r}", env, store))
        t0 = time.perf_counter()
        result = api.run(manifest, runs_dir=work / "runs-rebuild", env=env,
                         store=str(work / "store-0"))
        rebuild = time.perf_counter() - t0
        assert result.from_store == jobs, result.from_store
    none, local = statistics.median(walls["none"]), statistics.median(walls["local"])
    return {"jobs": jobs, "latency_s": latency, "concurrency": concurrency,
            "repeats": repeats, "wall_s": {k: [round(w, 2) for w in v] for k, v in walls.items()},
            "median_none_s": round(none, 2), "median_local_store_s": round(local, 2),
            "added_pct": round(100 * (local / none - 1), 2), "rebuild_s": round(rebuild, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--object-kib", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seedbatch-store-bench-") as tmp:
        work = Path(tmp)
        figures = {"machine": machine(),
                   "throughput": throughput(work, args.objects, args.object_kib),
                   "run": run_overhead(work, args.jobs, args.latency, args.concurrency,
                                       args.repeats)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
