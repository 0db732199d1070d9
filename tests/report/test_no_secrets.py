"""No credential ever lands in what a run writes: the run directory (journal and its WAL
included), the lockfile, the terminal output of run/status/report/verify — also when the
run goes through faults and when a wrong key stops it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from runner.emulator import EmulatorConfig, FaultSpec, serve_in_thread

pytestmark = pytest.mark.e2e

KEY = "wk-7d1e5a0c-secret-key-value"
SECRET = "ws-94b2f6e1-secret-signing-value"
PIX = "key_5f0e3c2a9b8d7e6f5a4b3c2d1e0f9a8b"

MANIFEST = """\
version: 1
name: vault
image_sets:
  ref: [ref.png]
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5, params: {resolution: 2K}}
jobs:
  - name: "still-{{ index }}-{{ model.alias }}"
    model: [v4, pix]
    images: [ref]
    prompt: "a still life, take {{ index }}"
    repeat: 4
"""


def _env(server: object, **creds: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIRO_", "PIXWITH_"))}
    env.update(creds)
    env["WIRO_BASE_URL"] = server.wiro_base_url  # type: ignore[attr-defined]
    env["PIXWITH_BASE_URL"] = server.pixwith_base_url  # type: ignore[attr-defined]
    return env


def _seedbatch(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _leaks(root: Path, texts: list[str]) -> list[str]:
    needles = [s.encode() for s in (KEY, SECRET, PIX)]
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {n.decode()}" for n in needles if n in data]
    for i, text in enumerate(texts):
        found += [f"output {i}: {n.decode()}" for n in needles if n.decode() in text]
    return found


def test_nothing_a_run_writes_or_prints_holds_a_credential(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), "teal").save(tmp_path / "ref.png")
    (tmp_path / "vault.yaml").write_text(MANIFEST, encoding="utf-8")
    # identify=False: a stand-in for the real hosts, so the run is real and pins a lockfile
    cfg = EmulatorConfig(latency=0.1, seed=5, identify=False,
                         credentials={"WIRO_API_KEY": KEY, "WIRO_API_SECRET": SECRET,
                                      "PIXWITH_API_KEY": PIX},
                         faults=FaultSpec.parse("5xx=0.1,fail=0.2,truncate=0.2"))
    outputs: list[str] = []
    with serve_in_thread(cfg) as server:
        env = _env(server, WIRO_API_KEY=KEY, WIRO_API_SECRET=SECRET, PIXWITH_API_KEY=PIX)
        done = _seedbatch(["run", "vault.yaml", "--yes", "--runs-dir", "runs"], env, tmp_path)
        outputs += [done.stdout, done.stderr]
        assert done.returncode in (0, 1), done.stderr
        run_dir = next((tmp_path / "runs").iterdir())
        for args in (["status", str(run_dir)], ["report", str(run_dir), "--format", "md"],
                     ["report", str(run_dir), "--format", "csv"], ["verify", str(run_dir)]):
            shown = _seedbatch(args, env, tmp_path)
            outputs += [shown.stdout, shown.stderr]

        # A wrong key stops the run (exit 3): its message must not echo what was sent.
        wrong = _env(server, WIRO_API_KEY=KEY + "-typo", WIRO_API_SECRET=SECRET,
                     PIXWITH_API_KEY=PIX + "0")
        refused = _seedbatch(["run", "vault.yaml", "--yes", "--runs-dir", "runs2", "--force"],
                             wrong, tmp_path)
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 3, refused.stderr

    assert (tmp_path / "vault.lock.json").is_file()
    assert (run_dir / "journal.sqlite").is_file()
    assert _leaks(tmp_path, outputs) == []
