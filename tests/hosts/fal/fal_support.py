"""Helpers of the fal.ai host's tests: jobs, clients against the emulator in process, the
CLI as a process, and the audit every end-to-end run of fal jobs ends with."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner.catalog import get_model
from runner.config import demo_credentials
from runner.emulator import EmulatorConfig
from runner.emulator.fal import FalTask
from runner.jobs import ImageRef, Job
from runner.providers.fal import FalProvider, decode_task_id
from runner.report.verify import verify_run
from runner.resources import load_schema
from runner.testing import EMULATOR_URL, ManualClock, emulator_settings, emulator_transport

ROOT = Path(__file__).resolve().parents[3]
V4, V45 = "fal/seedream-v4", "fal/seedream-v4.5"
LATENCY = 2.0
BASE = f"{EMULATOR_URL}/fal"


def make_job(model: str = V4, prompt: str = "a red tent at dusk",
             params: Mapping[str, Any] | None = None,
             images: tuple[ImageRef, ...] = ()) -> Job:
    found = get_model(model)
    final = found.with_defaults(params or {}) if found is not None else dict(params or {})
    return Job(key="k" * 64, name="job", alias="alias", model=model, provider="fal",
               prompt=prompt, params=final, images=images)


@asynccontextmanager
async def fal_client(clock: ManualClock | None = None, *, latency: float = LATENCY,
                     key: str | None = None, config: EmulatorConfig | None = None
                     ) -> AsyncIterator[tuple[FalProvider, Any]]:
    """A client against a fresh emulator in process, and the emulator's state."""
    cfg = config or EmulatorConfig(latency=latency, seed=0)
    transport = emulator_transport(cfg, ["fal"], clock=clock)
    client = FalProvider(base_url=BASE, api_key=key or emulator_settings("fal").api_key,
                         transport=transport)
    try:
        yield client, transport.app.state.emulator  # type: ignore[attr-defined]
    finally:
        await client.aclose()


def task_of(state: Any, task_id: str) -> FalTask:
    task = state.tasks[("fal", decode_task_id(BASE, task_id).request_id)]
    assert isinstance(task, FalTask)
    return task


# -- the command line as a process ------------------------------------------------------------

def env_at(server: Any) -> dict[str, str]:
    """This environment with the emulator's credentials, fal pointed at ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env.update(demo_credentials())
    env["FAL_BASE_URL"] = server.fal_base_url
    return env


# -- the audit --------------------------------------------------------------------------------

def fal_tasks(server: Any) -> dict[str, FalTask]:
    """The emulator's fal tasks by request id (the run is over: nothing runs meanwhile)."""
    return {rid: t for (p, rid), t in server.app.state.emulator.tasks.items() if p == "fal"}


def fal_submits(stats: Mapping[str, Any], status: str | None = None) -> int:
    return sum(sum(by.values()) if status is None else by.get(status, 0)
               for endpoint, by in stats["responses_by_endpoint"].items()
               if endpoint == "POST /fal/<endpoint id>")


def audit(run_dir: Path, server: Any, jobs: int) -> tuple[dict[str, Any], Counter[str]]:
    """What every end-to-end fal run must show, checked against the emulator's records:
    every job accounted for; each output intact and byte for byte what the emulator served
    for the job's own request; nothing paid twice, no paid output left unfetched; one
    request per job (an unknown job's lost submit made at most one, never resent); what
    the report says was spent (an estimate: fal reports no cost) is what the emulator billed
    for the run's requests."""
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    Draft202012Validator(load_schema("report.schema.json")).validate(report)
    stats = server.stats()
    tasks = fal_tasks(server)
    rjobs = report["jobs"]
    assert len(rjobs) == jobs
    statuses = Counter(j["status"] for j in rjobs)
    assert set(statuses) <= {"succeeded", "failed", "unknown"}, dict(statuses)
    checked = verify_run(run_dir)
    assert checked.intact, [p.describe() for p in checked.problems]
    assert stats["duplicate_paid"] == 0, stats["duplicates"]
    claimed: set[str] = set()
    usd = 0.0
    for job in rjobs:
        if job["status"] == "unknown":
            assert job["task_id"] is None, job
            assert job["error"], job
            continue
        rid = decode_task_id("http://anywhere/fal", job["task_id"]).request_id
        task = tasks[rid]
        assert task.prompt == job["prompt"]
        claimed.add(rid)
        if job["status"] == "succeeded":
            assert task.outcome == "succeeded"
            assert len(job["outputs"]) == task.images
            for out in job["outputs"]:
                served = task.outputs[out["index"]].file
                assert (out["sha256"], out["bytes"]) == (served.sha256, len(served.data))
            # fal reports no cost: the report charges images × list price, marked estimated,
            # which is what the emulator billed
            assert job["cost_estimated"] is True
            assert job["cost_usd"] == pytest.approx(task.cost_usd), (job, task.cost_usd)
            usd += task.cost_usd
        else:
            assert task.outcome == "failed", (job["name"], task.outcome)
            assert job["error"]
            assert not job["outputs"]
            assert not job["cost_usd"]
    orphans = [t for rid, t in tasks.items() if rid not in claimed]
    unknown_prompts = {j["prompt"] for j in rjobs if j["status"] == "unknown"}
    assert all(t.prompt in unknown_prompts for t in orphans)
    assert len(orphans) == len({t.prompt for t in orphans})  # never resent
    assert fal_submits(stats, "dropped") <= statuses["unknown"]
    billed_orphans = sum(1 for t in orphans if t.outcome == "succeeded")
    assert stats["tasks_billed"] == statuses["succeeded"] + billed_orphans
    assert abs(report["totals"]["cost_usd"] - usd) < 1e-9
    assert stats["paid_outputs_unfetched"] == sum(t.images for t in orphans
                                                  if t.outcome == "succeeded")
    return report, statuses
