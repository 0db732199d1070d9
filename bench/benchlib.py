"""Shared by the benchmarks: the machine they ran on, and the emulator in a process of its
own (for benchmarks that measure the client alone)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

CREDENTIAL_NAMES = ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY", "WIRO_BASE_URL",
                    "PIXWITH_BASE_URL")


def clean_env() -> dict[str, str]:
    """The environment without credentials: both sides use the built-in demo ones."""
    return {k: v for k, v in os.environ.items() if k not in CREDENTIAL_NAMES}


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/__stats", timeout=60).json()  # type: ignore[no-any-return]

    def cpu_seconds(self) -> float:
        """The emulator process's CPU time so far (user + system, ``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def wiro_base_url(self) -> str:
        return f"{self.url}/wiro/v1"

    @property
    def wiro_push_url(self) -> str:
        """Wiro's websocket, as the emulator's index names it."""
        url: str = httpx.get(f"{self.url}/__", timeout=60).json()["wiro_push_url"]
        return url


@contextlib.contextmanager
def emulator_process(work: Path, args: list[str],
                     log_name: str = "emulator.log") -> Iterator[Emulator]:
    """``python -m runner emulate --port 0 …`` in its own process; stopped with Ctrl-C."""
    log = work / log_name
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "emulate", "--port", "0",
                                 *args], cwd=ROOT, env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the emulator did not start:\n{log.read_text()}")
            for line in log.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    url = line.rsplit("listening on ", 1)[1].strip()
            time.sleep(0.05)
        yield Emulator(proc, url)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_REFERENCE_DOC = {"result": True, "errors": [], "tasklist": [{
    "id": "534574", "socketaccesstoken": "eDcCm5yyUfIvMFspTwww49OUfgm4",
    "status": "task_postprocess_end", "pexit": "0", "totalcost": "0.03", "elapsedseconds": "6.1",
    "outputs": [{"name": "0.png", "contenttype": "image/png", "size": "202472",
                 "url": "https://cdn1.wiro.ai/6a6af820-c5050aee-40bd7b83-a2e186c6-7f61f7da-"
                        "3894b4a2/0.png"}]}]}


def reference_cpu_ms(rounds: int = 5) -> float:
    """The CPU milliseconds a fixed piece of pure-Python work takes now (the least of
    ``rounds`` tries): JSON in and out, dicts, strings and small objects, like a client's
    bookkeeping. The same code on the same machine takes longer when the machine is busy or
    slowed by its neighbours, so a figure measured beside it can be compared across days."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(2000):
            text = json.dumps(_REFERENCE_DOC)
            doc = json.loads(text)
            task = doc["tasklist"][0]
            row = {key: str(value) for key, value in task.items() if key != "outputs"}
            row["key"] = f"job-{i:06d}-{task['id']}"
            _ = sorted(row.items()), "|".join(row.values()).upper().split("|")
        best = min(best, time.process_time() - t0)
    return round(best * 1000, 2)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory_gb": mem_gb}
