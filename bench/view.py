"""``seedbatch view`` on a large run: does a 2,000-image run stay responsive?

    python bench/view.py --images 2000 --json

Makes a run of ``--images`` images through the emulator (``seedbatch run --emulate``, Wiro
Seedream 4.0 jobs of 15 images each), then serves it with the viewer's own app in process
(httpx over ASGI: what is measured is the app, not a browser or a socket) and times what the
page asks for:

* ``runs_ms``: the runs list (``/api/runs``), first and again;
* ``gallery_ms`` / ``gallery_kb``: the run's gallery document (``/api/runs/<run>``) —
  every job and output, which the page filters and pages (120 thumbnails a page) itself;
* ``thumbs_page_ms``: the first page's 120 thumbnails made from the full images (cold), and
  asked again with their ETags (warm: 304 Not Modified, what a browser's cache does);
* ``image_ms``: one full-size image.

Median of ``--repeats`` for the warm figures. Prints JSON with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from benchlib import clean_env, machine  # noqa: E402

from runner.review.app import create_app  # noqa: E402

PAGE = 120


def make_run(root: Path, images: int) -> Path:
    per_job = 15
    jobs = -(-images // per_job)
    manifest = root / "big.yaml"
    manifest.write_text(f"""version: 1
name: view-bench
models:
  v4: {{model: wiro/seedream-v4, size: 1024x1024, count: {per_job}}}
jobs:
  - name: "big-{{{{ index }}}}"
    model: v4
    prompt: "a large run for the viewer"
    repeat: {jobs}
limits:
  wiro: {{concurrency: 64, requests_per_minute: 100000}}
budget:
  max_usd: 1000
""", encoding="utf-8")
    runs = root / "runs"
    subprocess.run([sys.executable, "-m", "runner", "run", str(manifest), "--emulate",
                    "--emulate-latency", "0.2", "--yes", "--quiet", "--runs-dir", str(runs)],
                   check=True, env=clean_env(), cwd=root, stdout=subprocess.DEVNULL)
    (run_dir,) = runs.iterdir()
    return run_dir


async def measure(run_dir: Path, repeats: int) -> dict[str, Any]:
    app = create_app(run_dir.parent)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

        async def timed(url: str, **kw: Any) -> tuple[float, httpx.Response]:
            t0 = time.perf_counter()
            r = await client.get(url, **kw)
            return (time.perf_counter() - t0) * 1000, r

        runs_first, r = await timed("/api/runs")
        r.raise_for_status()
        runs_again = statistics.median([(await timed("/api/runs"))[0] for _ in range(repeats)])
        run_id = run_dir.name
        gallery_first, r = await timed(f"/api/runs/{run_id}")
        r.raise_for_status()
        doc = r.json()
        gallery_kb = len(r.content) / 1024
        gallery_again = statistics.median(
            [(await timed(f"/api/runs/{run_id}"))[0] for _ in range(repeats)])
        paths = [o["path"] for j in doc["jobs"] for o in j.get("outputs", [])]
        first_page = paths[:PAGE]
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(client.get(f"/thumb/{run_id}/{p}") for p in first_page))
        cold = (time.perf_counter() - t0) * 1000
        etags = [a.headers["etag"] for a in answers]
        assert all(a.status_code == 200 for a in answers)
        warm_runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            again = await asyncio.gather(*(client.get(f"/thumb/{run_id}/{p}",
                                                      headers={"If-None-Match": e})
                                           for p, e in zip(first_page, etags, strict=True)))
            warm_runs.append((time.perf_counter() - t0) * 1000)
            assert all(a.status_code == 304 for a in again)
        image_ms = statistics.median(
            [(await timed(f"/image/{run_id}/{paths[len(paths) // 2]}"))[0]
             for _ in range(repeats)])
    return {
        "images": len(paths),
        "jobs": len(doc["jobs"]),
        "runs_ms": {"first": round(runs_first, 1), "again": round(runs_again, 1)},
        "gallery_ms": {"first": round(gallery_first, 1), "again": round(gallery_again, 1)},
        "gallery_kb": round(gallery_kb, 1),
        "thumbs_page_ms": {"thumbs": len(first_page), "cold": round(cold, 1),
                           "warm_304": round(statistics.median(warm_runs), 1)},
        "image_ms": round(image_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = make_run(Path(tmp), args.images)
        made_s = time.perf_counter() - t0
        figures = asyncio.run(measure(run_dir, args.repeats))
    result = {"benchmark": "view", "machine": machine(), "run_made_s": round(made_s, 1),
              **figures}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    os.environ.setdefault("SEEDBATCH_PLUGINS", "wiro")
    main()
