from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeProvider, make_plan

from runner.execute.executor import Executor, ExecutorOptions, Outcome, ReuseLookup
from runner.execute.journal import Journal
from runner.execute.limits import EffectiveLimits
from runner.execute.policy import PollSettings
from runner.execute.rundir import output_names
from runner.jobs import Budget, Job

FAST_POLL = PollSettings(initial_guess=0.05, min_step=0.01, max_step=0.2)
FAST = ExecutorOptions(poll=FAST_POLL, initial_guess={"wiro": 0.05, "pixwith": 0.05},
                       retry_wait_initial=0.01, retry_wait_max=0.1, limited_wait_initial=0.01,
                       download_backoff=0.01, cooldown=0.2, cancel_check_interval=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    for j in h.journals:
        j.close()


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (polling the event loop) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
