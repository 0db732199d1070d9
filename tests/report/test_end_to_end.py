"""An emulated run leaves a report that validates and verifies, and no lockfile (a rehearsal
pins nothing); a rerun reuses it. Real runs and the lockfile: tests/execute/test_safety_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runner.resources import load_schema
from runner.version import __version__

MANIFEST = """\
version: 1
name: lamps
matrix:
  light: [dawn, dusk]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "lamp-{{ light }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "a <lamp> at {{ light }}"
"""


@pytest.mark.e2e
def test_emulated_run_then_rerun(tmp_path: Path) -> None:
    from runner.api import run
    from runner.report.verify import verify_run

    manifest = tmp_path / "lamps.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    first = run(manifest, emulate=True, runs_dir=runs, emulate_latency=0.05,
                handle_signals=False)
    assert first.exit_code == 0, first.messages
    report = json.loads((first.run_dir / "report.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(load_schema("report.schema.json"))
    assert [e.message for e in validator.iter_errors(report)] == []
    assert report["run"]["emulated"] is True
    # which package registered each provider used, and its version
    assert report["run"]["providers"] == {
        name: {"entry_point": f"{name} = runner.hosts.{name}:SPEC", "distribution": "seedbatch",
               "version": __version__} for name in ("pixwith", "wiro")}
    plan = json.loads((first.run_dir / "plan.json").read_text(encoding="utf-8"))
    assert (plan["axes"], plan["description"]) == (["light"], None)
    assert report["axes"] == ["light"]
    assert report["totals"]["images"] == 4
    assert report["totals"]["cost_usd"] > 0
    assert report["totals"]["credits"] > 0
    assert verify_run(first.run_dir).intact
    assert (first.run_dir / "report.html").is_file()
    assert (first.run_dir / "grid.png").is_file()
    lock_path = tmp_path / "lamps.lock.json"
    assert not lock_path.exists()

    second = run(manifest, emulate=True, runs_dir=runs, emulate_latency=0.05,
                 handle_signals=False)
    assert second.exit_code == 0, second.messages
    again = json.loads((second.run_dir / "report.json").read_text(encoding="utf-8"))
    assert again["totals"]["reused"] == 4
    assert again["totals"]["cost_usd"] == 0
    assert again["run"]["providers"] == {}  # every job reused: no provider was used
    assert {j["reused_from"] for j in again["jobs"]} == {report["run"]["id"]}
    assert verify_run(second.run_dir).intact
    assert not lock_path.exists()
