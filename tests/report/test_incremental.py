"""Incremental runs, judged by what the emulator itself saw: an unchanged spec submits
nothing, an edited prompt re-runs exactly the jobs it feeds, --force re-runs everything,
and `seedbatch plan` says so beforehand."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import api
from runner.cli import main
from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, serve_in_thread

pytestmark = pytest.mark.e2e

MANIFEST = """\
version: 1
name: shelf
matrix:
  item: [vase, clock, lamp]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
prompts:
  hero: "a {{ item }} on a shelf, hero shot"
  detail: "close-up of a {{ item }}, detail shot"
jobs:
  - name: "hero-{{ item }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "{{ prompts.hero }}"
  - name: "detail-{{ item }}"
    model: v4
    prompt: "{{ prompts.detail }}"
"""


@pytest.fixture
def server() -> Iterator[object]:
    with serve_in_thread(EmulatorConfig(latency=0.1)) as srv:
        yield srv


def _env(server: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIRO_BASE_URL", "PIXWITH_BASE_URL", *demo_credentials())}
    env.update(demo_credentials())
    env["WIRO_BASE_URL"] = server.wiro_base_url  # type: ignore[attr-defined]
    env["PIXWITH_BASE_URL"] = server.pixwith_base_url  # type: ignore[attr-defined]
    return env


def _created(server: object) -> int:
    return int(server.stats()["tasks_created_total"])  # type: ignore[attr-defined]


def _plan(manifest: Path, runs: Path, env: dict[str, str], *extra: str) -> dict:
    result = CliRunner().invoke(main, ["plan", str(manifest), "--json", "--runs-dir",
                                       str(runs), *extra], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _run(manifest: Path, runs: Path, env: dict[str, str], force: bool = False) -> dict:
    result = api.run(manifest, runs_dir=runs, env=env, force=force, handle_signals=False)
    assert result.exit_code == 0, result.messages
    return json.loads((result.run_dir / "report.json").read_text(encoding="utf-8"))


def test_unchanged_rerun_submits_nothing_and_an_edit_reruns_only_its_jobs(
        tmp_path: Path, server: object) -> None:
    manifest = tmp_path / "shelf.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    runs = tmp_path / "runs"
    env = _env(server)

    before = _plan(manifest, runs, env)
    assert {j["status"] for j in before["jobs"]} == {"new"}
    assert before["estimate"]["to_run"]["jobs"] == 9

    first = _run(manifest, runs, env)
    assert first["totals"]["succeeded"] == 9
    assert _created(server) == 9

    cached = _plan(manifest, runs, env)
    assert {j["status"] for j in cached["jobs"]} == {"cached"}
    assert cached["estimate"]["to_run"] == {"jobs": 0, "images": 0, "usd": 0, "credits": 0}

    again = _run(manifest, runs, env)
    assert _created(server) == 9  # not one task submitted
    assert again["totals"]["reused"] == 9
    assert again["totals"]["cost_usd"] == 0

    # Edit the named prompt that only the three "detail" jobs use.
    manifest.write_text(MANIFEST.replace("detail shot", "macro detail shot"), encoding="utf-8")
    edited = _plan(manifest, runs, env)
    status = {j["name"]: j["status"] for j in edited["jobs"]}
    assert {n for n, s in status.items() if s == "changed"} == {
        "detail-vase", "detail-clock", "detail-lamp"}
    assert {s for n, s in status.items() if not n.startswith("detail-")} == {"cached"}
    assert edited["estimate"]["to_run"]["jobs"] == 3

    third = _run(manifest, runs, env)
    assert _created(server) == 12  # exactly the three jobs that prompt feeds
    by_name = {j["name"]: j for j in third["jobs"]}
    assert {n for n, j in by_name.items() if not j["reused"]} == {
        "detail-vase", "detail-clock", "detail-lamp"}
    assert all(j["status"] == "succeeded" for j in third["jobs"])

    forced = _plan(manifest, runs, env, "--force")
    assert "status" not in forced["jobs"][0]
    assert forced["estimate"]["to_run"]["jobs"] == 9
    _run(manifest, runs, env, force=True)
    assert _created(server) == 21
