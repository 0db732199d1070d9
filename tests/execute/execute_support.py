"""Shared helpers for the executor's tests: fast executor options, a harness that builds an
executor over fake providers, manifests on disk, an emulator on a loopback socket."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from execute_fakes import FakeProvider, make_plan
from PIL import Image

from runner.config import demo_credentials
from runner.execute.executor import Executor, ExecutorOptions, Outcome
from runner.execute.journal import Journal
from runner.execute.limits import EffectiveLimits
from runner.execute.policy import PollSettings
from runner.jobs import Budget, Job
from runner.outputs import ReuseLookup
from runner.rundir import output_names

ROOT = Path(__file__).resolve().parents[2]

FAST_POLL = PollSettings(initial_guess=0.05, min_step=0.01, max_step=0.2)
FAST = ExecutorOptions(poll=FAST_POLL, initial_guess={"wiro": 0.05, "pixwith": 0.05},
                       retry_wait_initial=0.01, retry_wait_max=0.1, limited_wait_initial=0.01,
                       download_backoff=0.01, cooldown=0.2, cancel_check_interval=0.05)


@dataclass
class Harness:
    tmp: Path
    journals: list[Journal] = field(default_factory=list)

    def executor(self, jobs: Sequence[Job], providers: Mapping[str, FakeProvider], *,
                 concurrency: int | Mapping[str, int] = 4, rpm: float | None = None,
                 budget: Budget | None = None, options: ExecutorOptions | None = None,
                 reuse: ReuseLookup | None = None, run_dir: Path | None = None,
                 journal: Journal | None = None) -> Executor:
        plan = make_plan(list(jobs), tmp=self.tmp)
        names = {job.key: output_names(plan, job) for job in jobs}
        if run_dir is None:
            run_dir = self.tmp / "run"
            run_dir.mkdir()
        if journal is None:
            journal = Journal.create(run_dir / "journal.sqlite", list(jobs), {"name": "t"})
            self.journals.append(journal)
        limits = {name: EffectiveLimits(concurrency if isinstance(concurrency, int)
                                        else concurrency[name], rpm) for name in providers}
        return Executor(run_dir=run_dir, journal=journal, jobs=jobs, output_names=names,
                        providers=providers, limits=limits, budget=budget,
                        options=options or FAST, reuse=reuse)

    async def run(self, jobs: Sequence[Job], providers: Mapping[str, FakeProvider],
                  **kw: object) -> tuple[Executor, Outcome]:
        ex = self.executor(jobs, providers, **kw)  # type: ignore[arg-type]
        return ex, await ex.run()


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (polling the event loop) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# Quick retries, a first poll near the emulator's latency.
E2E = replace(FAST, poll=replace(FAST.poll, initial_guess=0.3, min_step=0.05, max_step=0.5),
              initial_guess={"wiro": 0.3, "pixwith": 0.3}, retry_wait_initial=0.05,
              retry_wait_max=0.5, limited_wait_initial=0.05, download_backoff=0.05)


def env_for(server: object, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY",
                        "WIRO_BASE_URL", "PIXWITH_BASE_URL")}
    env.update(demo_credentials())
    env["WIRO_BASE_URL"] = server.wiro_base_url  # type: ignore[attr-defined]
    env["PIXWITH_BASE_URL"] = server.pixwith_base_url  # type: ignore[attr-defined]
    env.update(extra)
    return env


def write_refs(folder: Path) -> None:
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), "navy").save(folder / "refs" / "product.png")


MIXED = """\
version: 1
name: mixed
matrix:
  product: [tent, boots]
image_sets:
  product: [refs/product.png]
  style: [https://example.com/style.png]
models:
  v4:  {model: wiro/seedream-v4, params: {size: 2048x2048}}
  v45: {model: wiro/seedream-v4-5, params: {width: 2560, height: 1440}}
  v3:  {model: wiro/seedream-v3, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K, aspect_ratio: "16:9"}}
jobs:
  - name: "{{ product }}-{{ model.alias }}"
    model: [v4, v3, pix]
    prompt: "a {{ product }} at dusk"
  - name: "edit-{{ product }}"
    model: v45
    images: [product, style]
    prompt: "the {{ product }} from image 1 in the style of image 2"
  - name: "editpix-{{ product }}"
    model: pix
    images: [product]
    prompt: "the {{ product }} on a table"
limits:
  wiro: {concurrency: 8}
  pixwith: {concurrency: 8}
"""


def simple_manifest(n: int, *, name: str = "simple", concurrency: int = 8,
                    budget: str = "", model: str = "wiro/seedream-v4",
                    params: str = "{size: 1024x1024}") -> str:
    return f"""\
version: 1
name: {name}
matrix:
  i: [{", ".join(str(i) for i in range(n))}]
models:
  m: {{model: {model}, params: {params}}}
jobs:
  - name: "img-{{{{ i }}}}"
    model: m
    prompt: "picture number {{{{ i }}}}"
limits:
  wiro: {{concurrency: {concurrency}}}
  pixwith: {{concurrency: {concurrency}}}
{budget}"""


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def journal_rows(run_dir: Path) -> list[tuple[str, str, str | None]]:
    """(name, state, task_id) of every job, read as another process would."""
    path = run_dir / "journal.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("SELECT name, state, task_id FROM jobs ORDER BY seq").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def only_run_dir(runs: Path) -> Path | None:
    found = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    return found[0] if len(found) == 1 else None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def spawn(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
