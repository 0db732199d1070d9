"""``manifests/hosts-ab.yaml`` — one prompt on all five hosts — through the real command
line: it validates, plans with an estimate per host from the portable settings, and runs
under ``--emulate`` (the emulator on a loopback socket) to a report whose A/B grid has one
column per host and whose cost and latency summary has one row per host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from runner.report.grid import build_grid, choose_axes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifests" / "hosts-ab.yaml"
HOSTS = ["wiro", "pixwith", "fal", "replicate", "byteplus"]
HANG_GUARD = 300  # seconds; the run needs a few


def seedbatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_SECRET", "_TOKEN"))}
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True,
                          text=True, timeout=HANG_GUARD, env=env, cwd=ROOT, check=False)


def test_it_plans_each_hosts_own_parameters_from_one_size_and_count() -> None:
    done = seedbatch("plan", str(MANIFEST), "--json", "--runs-dir", "/nonexistent-runs")
    assert done.returncode == 0, done.stderr
    jobs = {j["name"]: j for j in json.loads(done.stdout)["jobs"]}
    assert {j["provider"] for j in jobs.values()} == set(HOSTS)
    params = {h: jobs[f"lighthouse-{h}"]["params"] for h in HOSTS}
    assert (params["wiro"]["width"], params["wiro"]["height"], params["wiro"]["maxImages"]) == (
        2048, 2048, 2)
    assert (params["pixwith"]["resolution"], params["pixwith"]["aspect_ratio"],
            params["pixwith"]["num_outputs"]) == ("2K", "1:1", 2)
    assert (params["fal"]["image_size"], params["fal"]["num_images"]) == (
        {"width": 2048, "height": 2048}, 2)
    assert (params["replicate"]["size"], params["replicate"]["width"],
            params["replicate"]["max_images"]) == ("custom", 2048, 2)
    assert (params["byteplus"]["size"],
            params["byteplus"]["sequential_image_generation_options"]) == (
        "2048x2048", {"max_images": 2})
    # the edits override count: one image each, and carry both reference images
    assert all(jobs[f"edit-{h}"]["estimate"]["images"] == 1 for h in HOSTS)
    assert all(len(jobs[f"edit-{h}"]["images"]) == 2 for h in HOSTS)
    # an estimate per host: three images each at the list price
    by_host: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for job in jobs.values():
        by_host[job["provider"]][0] += job["estimate"]["usd"]
        by_host[job["provider"]][1] += job["estimate"]["credits"]
    assert {h: (round(u, 6), c) for h, (u, c) in by_host.items()} == {
        "wiro": (0.12, 0.0), "fal": (0.12, 0.0), "replicate": (0.12, 0.0),
        "byteplus": (0.12, 0.0), "pixwith": (0.0, 18.0)}


def test_it_runs_on_every_host_to_a_grid_with_a_column_per_host(tmp_path: Path) -> None:
    done = seedbatch("run", str(MANIFEST), "--emulate", "--yes", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (run_dir,) = tmp_path.iterdir()
    report: dict[str, Any] = json.loads((run_dir / "report.json").read_text())
    assert report["totals"]["succeeded"] == 10
    assert report["totals"]["images"] == 15
    assert sorted(report["run"]["emulated_providers"]) == sorted(HOSTS)
    # one column per host
    spec = choose_axes(report)
    grid = build_grid(report, spec)
    assert spec.x == "model"
    assert [c.text for c in grid.columns] == HOSTS
    # cost and latency per host, from this run's own jobs
    rows = {row["alias"]: row for row in report["totals"]["by_model"]}
    assert sorted(rows) == sorted(HOSTS)
    for host, row in rows.items():
        assert row["succeeded"] == 2, host
        assert row["images"] == 3, host
        assert row["latency"]["jobs"] == 2, host
        assert row["latency"]["max_s"] > 0, host
    for host in ("wiro", "fal", "replicate", "byteplus"):
        assert rows[host]["usd_per_image"] == pytest.approx(0.04), host
    assert rows["pixwith"]["credits"] == 18.0
    # fal and Replicate report no cost: theirs is the list price, marked as estimated
    estimated = {j["provider"] for j in report["jobs"] if j["cost_estimated"]}
    assert estimated == {"fal", "replicate"}
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Cost and latency by model" in html
