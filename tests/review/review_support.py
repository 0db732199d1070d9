"""Real run directories for the review tests, made by running manifests through the emulator.

One project per test module (runs are cheap but not free)::

    project/hero.yaml            version 2 of the manifest (v4 at 2048x2048)
    runs/<run 1>                 version 1 (v4 at 1024x1024), emulated, one job failed
    runs/<run 2>                 version 2, emulated: the v4 jobs ran again, pix reused
    runs-real/<run 3>            version 2 against the emulator as if it were the real host
                                 (in-process transport, it does not identify itself)

Tests that write picks or exports copy nothing they do not own: picks go beside the
manifest in the project folder, which each test module gets fresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MANIFEST_V1 = """\
version: 1
name: hero
description: Tents and boots at dawn and dusk, on two hosts
matrix:
  product: [tent, boots]
  light: [dawn, dusk]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "{{ product }}-{{ light }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "Acme {{ product }} at {{ light }}, <b>product</b> photo"
  - name: broken
    model: v4
    matrix: {}
    prompt: "this one fails emulator:fail"
output:
  filename: "{{ job.name }}/{{ image.index }}.{{ image.ext }}"
"""

MANIFEST_V2 = MANIFEST_V1.replace("size: 1024x1024", "size: 2048x2048")
JOB_NAMES = sorted([f"{p}-{light}-{a}" for p in ("tent", "boots") for light in ("dawn", "dusk")
                    for a in ("v4", "pix")] + ["broken"])


@dataclass(frozen=True)
class Project:
    root: Path
    manifest: Path
    runs: Path
    runs_real: Path
    run1: Path
    run2: Path
    run3: Path

    @property
    def picks(self) -> Path:
        return self.manifest.with_name("hero.picks.json")

    def report(self, run_dir: Path) -> dict[str, Any]:
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))

    def job(self, run_dir: Path, name: str) -> dict[str, Any]:
        return next(j for j in self.report(run_dir)["jobs"] if j["name"] == name)


def _real_env() -> dict[str, str]:
    """Demo credentials, and base URLs on a host that is not loopback: seedbatch takes the
    endpoint for the real one (the in-process transport answers in its stead)."""
    from runner.config import demo_credentials
    from runner.plugins import registry

    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env.update(demo_credentials())
    for spec in registry().providers.values():
        if spec.emulator is not None:
            env[spec.base_url_var] = f"https://hosts.example{spec.emulator.path}"
    return env


def make_project(root: Path) -> Project:
    from runner.api import run
    from runner.emulator import EmulatorConfig
    from runner.emulator.app import create_app

    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "project" / "hero.yaml"
    manifest.parent.mkdir()
    runs, runs_real = root / "runs", root / "runs-real"
    manifest.write_text(MANIFEST_V1, encoding="utf-8")
    first = run(manifest, emulate=True, runs_dir=runs, emulate_latency=0.05,
                handle_signals=False)
    assert first.exit_code == 1, first.messages  # "broken" failed, as its prompt asks
    manifest.write_text(MANIFEST_V2, encoding="utf-8")
    second = run(manifest, emulate=True, runs_dir=runs, emulate_latency=0.05,
                 handle_signals=False)
    assert second.exit_code == 1, second.messages
    app = create_app(EmulatorConfig(latency=0.05, identify=False))
    third = run(manifest, runs_dir=runs_real, transport=httpx.ASGITransport(app=app),
                env=_real_env(), handle_signals=False)
    assert third.exit_code == 1, third.messages
    return Project(root, manifest, runs, runs_real, first.run_dir, second.run_dir,
                   third.run_dir)
