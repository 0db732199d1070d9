"""End to end through the real command line, as processes: the installed plugin is seen by
`seedbatch models`, `plugins`, `validate`, `plan` and `run --emulate`, and SEEDBATCH_PLUGINS
leaves it out again. The time limit of each process is a hang guard only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .conftest import PACKAGE

pytestmark = pytest.mark.e2e

HANG_GUARD = 120  # seconds
TILES = PACKAGE / "manifests" / "tiles.yaml"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+) "
                  r"\(at (?P<path>\$[^)]*)\)$")


def seedbatch(*args: str, cwd: Path,
              plugins: str | None = None) -> subprocess.CompletedProcess[str]:
    """``seedbatch ARGS`` as a process of this environment; every installed plugin is loaded
    unless ``plugins`` sets SEEDBATCH_PLUGINS. No Demo Images variable leaks in."""
    script = Path(sys.executable).with_name("seedbatch")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "runner"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEEDBATCH_PLUGINS", "DEMO_API_KEY", "DEMO_BASE_URL")}
    if plugins is not None:
        env["SEEDBATCH_PLUGINS"] = plugins
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD, check=False)


def models_json(cwd: Path, plugins: str | None = None) -> dict[str, Any]:
    proc = seedbatch("models", "--json", cwd=cwd, plugins=plugins)
    assert proc.returncode == 0, proc.stderr
    return {m["id"]: m for m in json.loads(proc.stdout)}


def test_models_lists_the_plugin_and_seedbatch_plugins_hides_it(tmp_path: Path) -> None:
    listed = models_json(tmp_path)
    pattern = listed["demo/pattern-v1"]
    assert (pattern["provider"], pattern["endpoint"]) == ("demo", "pattern-v1")
    assert pattern["price"] == {"usd_per_image": 0.002, "credits_per_image": None,
                                "source": "Demo Images price list"}
    assert pattern["outputs_param"] == "n"
    assert pattern["limits"] == {"max_input_images": 0, "max_request_pixels": 4194304}
    assert {p["name"]: p.get("default") for p in pattern["params"]} == {
        "width": 1024, "height": 1024, "n": 1, "seed": None}
    assert "demo/pattern-hd-v1" in listed
    assert "wiro/seedream-v4" in listed  # the built-ins stay

    hidden = models_json(tmp_path, plugins="wiro,pixwith")
    assert not [m for m in hidden if m.startswith("demo/")]
    assert "wiro/seedream-v4" in hidden
    proc = seedbatch("plugins", "--json", cwd=tmp_path, plugins="wiro,pixwith")
    not_loaded = json.loads(proc.stdout)["not_loaded"]
    assert "demo" in not_loaded
    assert not {"wiro", "pixwith"} & set(not_loaded)

    proc = seedbatch("plugins", "--json", cwd=tmp_path)
    (demo,) = [p for p in json.loads(proc.stdout)["providers"] if p["name"] == "demo"]
    assert (demo["distribution"], demo["version"], demo["entry_point"]) == (
        "seedbatch-demo", "0.1.0", "demo = seedbatch_demo:SPEC")
    assert (demo["can_cancel"], demo["emulator"]) == (True, "/demo/v1")


def test_validate_and_plan_see_the_plugin_and_fail_without_it(tmp_path: Path) -> None:
    manifest = tmp_path / "tiles.yaml"
    shutil.copyfile(TILES, manifest)
    proc = seedbatch("validate", "tiles.yaml", cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok: tiles.yaml (5 jobs)")

    plan = seedbatch("plan", "--json", "tiles.yaml", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    estimate = json.loads(plan.stdout)["estimate"]
    assert (estimate["jobs"], estimate["images"]) == (5, 9)
    assert estimate["usd"] == pytest.approx(4 * 2 * 0.002 + 0.008)
    assert [m["model"] for m in estimate["by_model"]] == ["demo/pattern-v1",
                                                          "demo/pattern-hd-v1"]

    left_out = seedbatch("validate", "tiles.yaml", cwd=tmp_path, plugins="wiro,pixwith")
    assert left_out.returncode == 2
    located = [LINE.match(line) for line in left_out.stderr.splitlines()]
    found = [m for m in located if m is not None]
    assert [(m["file"], m["line"], m["col"], m["path"]) for m in found] == [
        ("tiles.yaml", "15", "17", "$.models.tile.model"),
        ("tiles.yaml", "16", "18", "$.models.large.model"),
        ("tiles.yaml", "29", "3", "$.limits.demo")]
    left = "provider 'demo' is installed but not loaded: SEEDBATCH_PLUGINS is set and does " \
           "not name it"
    assert [m["msg"] for m in found] == [
        f"model 'demo/pattern-v1': {left}", f"model 'demo/pattern-hd-v1': {left}",
        "unknown key 'demo' (allowed here: pixwith, wiro)"]
    assert left_out.stderr.strip().endswith("3 problems found")


def test_validate_reports_the_plugins_own_rule_where_it_is_broken(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(
        "version: 1\nname: big\nmodels:\n"
        "  tile: {model: demo/pattern-v1, params: {width: 2048, height: 2048, n: 2}}\n"
        "jobs:\n  - {name: big, model: tile, prompt: big tiles}\n", encoding="utf-8")
    proc = seedbatch("validate", "big.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    found = [m for m in map(LINE.match, proc.stderr.splitlines()) if m is not None]
    assert len(found) == 1, proc.stderr
    assert (found[0]["line"], found[0]["path"]) == ("4", "$.models.tile.params.n")
    assert "n × width × height = 2×2048×2048 = 8,388,608 pixels" in found[0]["msg"]


def test_run_emulate_delivers_every_job_and_records_the_cost(tmp_path: Path) -> None:
    manifest = tmp_path / "tiles.yaml"
    text = TILES.read_text(encoding="utf-8")
    # one more job, whose task the emulator fails: the run goes on and says so (exit 1)
    manifest.write_text(text.replace("limits:", (
        "  - name: doomed\n    model: tile\n    matrix: {}\n"
        "    prompt: \"a broken tile emulator:fail\"\n\nlimits:")), encoding="utf-8")
    proc = seedbatch("run", "tiles.yaml", "--emulate", "--yes", "--runs-dir", "runs",
                     cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert report["run"]["emulated_providers"] == ["demo"]
    assert report["run"]["providers"] == {"demo": {
        "entry_point": "demo = seedbatch_demo:SPEC", "distribution": "seedbatch-demo",
        "version": "0.1.0"}}
    by_name = {job["name"]: job for job in report["jobs"]}
    assert len(by_name) == 6
    doomed = by_name.pop("doomed")
    assert doomed["status"] == "failed"
    assert "the pattern generator failed" in doomed["error"]
    assert not doomed["cost_usd"]
    assert {job["status"] for job in by_name.values()} == {"succeeded"}
    assert sum(job["cost_usd"] for job in by_name.values()) == pytest.approx(0.024)
    assert report["totals"]["cost_usd"] == pytest.approx(0.024)
    outputs = [o for job in by_name.values() for o in job["outputs"]]
    assert len(outputs) == 9
    for output in outputs:
        with Image.open(run_dir / output["path"]) as image:
            assert image.format == "PNG"
    verify = seedbatch("verify", str(run_dir), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
