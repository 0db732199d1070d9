"""``seedbatch emulate``: help, banner, credentials never shown, serving until Ctrl-C."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.cli.emulate_cmd import credential_lines, settings_of
from runner.config import demo_credentials
from runner.emulator import EmulatorConfig, create_app


def test_help_teaches_and_the_docs_hold_the_curl_recipes() -> None:
    result = CliRunner().invoke(main, ["emulate", "--help"])
    assert result.exit_code == 0
    for words in ("docs/emulator.md", "--faults", "--image-size", "--port 0"):
        assert words in result.output, words
    docs = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    for words in ("openssl dgst -sha256 -hmac", "x-signature", "/wiro/v1/Run/bytedance/",
                  "Task/Detail", "/pixwith/api/task/create", "Api-Key", "WIRO_BASE_URL"):
        assert words in docs, words


def test_credentials_from_the_environment_are_never_shown() -> None:
    lines = "\n".join(credential_lines({"WIRO_API_KEY": "my-real-key",
                                        "WIRO_API_SECRET": "my-real-secret"}))
    assert "my-real-key" not in lines
    assert "my-real-secret" not in lines
    assert "WIRO_API_SECRET  from the environment (value not shown)" in lines
    # what is not in the environment falls back to the public demo value, shown to copy
    assert f"export PIXWITH_API_KEY={demo_credentials()['PIXWITH_API_KEY']}" in lines


def test_bad_options_exit_2() -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["emulate", "--faults", "drop=2"])
    assert bad.exit_code == 2
    assert "between 0 and 1" in bad.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner.invoke(main, ["emulate", "--port", str(port)])
    assert busy.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.output
    assert "--port 0" in busy.output


@pytest.mark.parametrize(("args", "words"), [
    (["--set", "pixwith.nope=1"], "the pixwith emulator has no option 'nope'"),
    (["--set", "nowhere.credits=1"], "no emulated provider 'nowhere'"),
    (["--set", "pixwith.credits=many"], "pixwith.credits must be an integer, not 'many'"),
    (["--set", "pixwith.credits=-5"], "pixwith.credits must be ≥ 0"),
    (["--set", "wiro.balance_usd=-1"], "wiro.balance_usd must be ≥ 0"),
    (["--set", "credits=5"], "is not PROVIDER.OPTION=VALUE"),
])
def test_bad_provider_options_exit_2(args: list[str], words: str) -> None:
    bad = CliRunner().invoke(main, ["emulate", "--port", "0", *args])
    assert bad.exit_code == 2
    assert "Invalid value for '--set'" in bad.output
    assert words in " ".join(bad.output.split()), bad.output


def test_set_and_the_credits_alias_become_provider_options() -> None:
    assert settings_of((), None) == {}
    # --credits N: the credits option of every provider that has one; --set wins over it
    assert settings_of((), 7) == {"pixwith": {"credits": "7"}}
    assert settings_of(("pixwith.credits=20", "wiro.balance_usd=0.5"), 7) == {
        "pixwith": {"credits": "20"}, "wiro": {"balance_usd": "0.5"}}
    app = create_app(EmulatorConfig(credentials=demo_credentials(),
                                    options=settings_of(("pixwith.credits=20",), None)))

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://emu") as client:
            return (await client.post("/pixwith/api/task/get_credits", headers={
                        "Api-Key": demo_credentials()["PIXWITH_API_KEY"]}),
                    await client.get("/__"))

    answer, index = asyncio.run(ask())
    assert answer.json()["data"] == {"credits": 20}
    options = index.json()["config"]["options"]
    assert {k: options[k] for k in ("pixwith", "wiro")} == {
        "pixwith": {"credits": 20, "upload_ttl": 600.0}, "wiro": {"balance_usd": 1000.0}}


@contextmanager
def emulate(*args: str, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "emulate", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    assert proc.stdout is not None
    banner = []
    deadline = time.monotonic() + 90  # a hang guard: a loaded machine imports slowly
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if "Press Ctrl-C" in line:
                break
        yield proc, "".join(banner)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_emulate_serves_until_ctrl_c_and_keeps_secrets_quiet() -> None:
    env = {"WIRO_API_KEY": "env-key-4471", "WIRO_API_SECRET": "env-secret-9921"}
    with emulate("--latency", "0.1", "--faults", "slow=0.5", env=env) as (proc, banner):
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert match, banner
        url = match.group(1)
        assert f"export WIRO_BASE_URL={url}/wiro/v1" in banner
        assert f"export PIXWITH_BASE_URL={url}/pixwith/api" in banner
        assert "faults slow=0.5,slow_seconds=3" in banner
        assert "credits=500" in banner  # each provider's options, as set
        nonce = str(time.time_ns())
        signature = hmac.new(b"env-key-4471", f"env-secret-9921{nonce}".encode(),
                             hashlib.sha256).hexdigest()
        run = httpx.post(f"{url}/wiro/v1/Run/bytedance/seedream-v4",
                         headers={"x-api-key": "env-key-4471", "x-nonce": nonce,
                                  "x-signature": signature},
                         data={"prompt": "from the command line"}, timeout=60)
        assert run.json()["result"] is True  # the environment's credentials are the ones
        assert httpx.get(f"{url}/__stats", timeout=60).json()["tasks_created_total"] == 1
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        output = banner + rest
        assert "emulator stopped" in output
        assert "env-key-4471" not in output
        assert "env-secret-9921" not in output
        assert "from the environment (value not shown)" in output


@pytest.mark.e2e
def test_emulate_warns_off_loopback() -> None:
    with emulate("--host", "0.0.0.0", env={}) as (_proc, banner):
        assert "warning: listening on 0.0.0.0, not a loopback address" in banner
