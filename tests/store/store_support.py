"""Helpers of the store tests: the command line in a process of its own, run directories,
and the emulator's task count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MANIFEST = """\
version: 1
name: shared
matrix:
  i: [0, 1, 2]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "img-{{ i }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "picture number {{ i }}"
"""
JOBS = 6


def cli(*args: str, env: dict[str, str], cwd: Path | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False, cwd=cwd)


def tasks_created(server: Any) -> int:
    """Every task the emulator has been asked to create, over all its hosts."""
    created = server.stats()["tasks_created"]
    return sum(sum(by_model.values()) for by_model in created.values())


def only_run_dir(runs: Path) -> Path:
    dirs = sorted(d for d in runs.iterdir() if d.is_dir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def report_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))


def outputs_by_job(run_dir: Path) -> dict[str, list[bytes]]:
    """Job name → its output files' bytes, in index order."""
    found: dict[str, list[bytes]] = {}
    for job in report_of(run_dir)["jobs"]:
        found[job["name"]] = [(run_dir / o["path"]).read_bytes()
                              for o in sorted(job["outputs"], key=lambda o: o["index"])]
    return found


def write_manifest(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shared.yaml"
    path.write_text(MANIFEST + extra, encoding="utf-8")
    return path
