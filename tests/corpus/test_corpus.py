"""Every malformed or hostile manifest in cases/ is refused cleanly by the real CLI.

For each case, both ``seedbatch validate`` and ``seedbatch plan --yes`` must exit 2 with at
least one ``FILE:LINE:COL: message (at $.path)`` line containing the case's expected
fragment (at the expected place, when the case says), print no traceback, finish quickly
and touch no network. Adding a file to cases/ adds a case.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main

from .conftest import (
    CASES_DIR,
    Case,
    NetworkAttempts,
    all_cases,
    blocked_network,
    materialize,
    read_case,
)

CASES = all_cases()
ROOT = Path(__file__).resolve().parents[2]
# Hang guards, not speed targets (speed is measured under bench/): a refused sweep or bomb
# takes milliseconds, while expanding one takes minutes (10^7 jobs: about 190 s), so a bound
# this loose still catches the bug and never flakes on a busy machine.
HANG_GUARD = 30.0


def located(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}:\d+:\d+: .+ \(at \$[^)]*\)$")


def check_output(case: Case, exit_code: int, stdout: str, stderr: str) -> None:
    assert exit_code == 2, f"{case.name}: exit {exit_code}\n{stdout}\n{stderr}"
    assert "Traceback" not in stdout + stderr
    lines = stderr.splitlines()
    pattern = located(case.name)
    good = [line for line in lines if pattern.match(line)]
    assert good, f"{case.name}: no located message in\n{stderr}"
    hits = [line for line in good if case.expect in line]
    assert hits, f"{case.name}: {case.expect!r} not in\n{stderr}"
    if case.at:
        assert any(line.startswith(f"{case.name}:{case.at}: ") for line in hits), (
            f"{case.name}: expected at {case.at}\n{stderr}")
    assert lines[-1].endswith(("problem found", "problems found")), stderr


def test_the_corpus_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40


def test_the_network_guard_sees_every_way_out() -> None:
    import httpx

    with blocked_network() as attempts:
        for attempt in (lambda: socket.create_connection(("example.com", 443), timeout=1),
                        lambda: socket.getaddrinfo("example.com", 443),
                        lambda: socket.socket().connect(("127.0.0.1", 9)),
                        lambda: httpx.get("http://127.0.0.1:9/", timeout=1)):
            with pytest.raises((OSError, httpx.HTTPError)):
                attempt()
    assert [what for what, _ in attempts][:3] == ["create_connection", "getaddrinfo",
                                                  "socket.connect"]
    assert len(attempts) >= 4  # httpx went through one of them too


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path.stem)
def test_each_case_says_what_it_attacks_and_expects(case: Case) -> None:
    assert case.attack, f"{case.name}: no '# attack:' line"
    assert case.expect, f"{case.name}: no '# expect:' line"
    if case.at:
        assert re.fullmatch(r"\d+:\d+", case.at), case.at


@pytest.mark.parametrize("command", [["validate"], ["plan", "--yes"]], ids=["validate", "plan"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path.stem)
def test_case_is_refused_with_a_located_message(case: Case, command: list[str], tmp_path: Path,
                                                no_network: NetworkAttempts,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = materialize(case, tmp_path)
    monkeypatch.chdir(target.parent)
    started = time.perf_counter()
    result = CliRunner().invoke(main, [*command, target.name])
    elapsed = time.perf_counter() - started
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    check_output(case, result.exit_code, result.stdout, result.stderr)
    assert "ok:" not in result.stdout
    assert elapsed < HANG_GUARD, f"{case.name}: took {elapsed:.1f} s"


def test_a_huge_reference_image_is_refused_without_opening_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: NetworkAttempts) -> None:
    case = read_case(CASES_DIR / "ref-huge-sparse.yaml")
    target = materialize(case, tmp_path)
    huge = target.parent / "refs" / "huge.png"
    assert huge.stat().st_size == 200 * 1024 * 1024
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args: object, **kwargs: object) -> object:
        opened.append(self.name)
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", spy)
    monkeypatch.chdir(target.parent)
    result = CliRunner().invoke(main, ["validate", target.name])
    check_output(case, result.exit_code, result.stdout, result.stderr)
    assert "huge.png" not in opened


def test_a_manifest_that_never_ends_is_cut_at_the_size_limit(
        no_network: NetworkAttempts) -> None:
    """A device (or a pipe) has no size to check first: reading stops at the limit."""
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["validate", "/dev/zero"])
    assert time.perf_counter() - started < HANG_GUARD
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == ("/dev/zero:1:1: a manifest may be at most 4 MiB "
                                             "(at $)")


# a representative handful, through a real process: YAML, types, sweeps, templates, paths,
# special files, unicode, providers
SUBPROCESS_CASES = ["yaml-tab-indent", "invalid-utf8", "repeat-huge", "sweep-billion-matrix",
                    "alias-bomb-billion-laughs", "tpl-class-mro", "tpl-nested-loops",
                    "output-dotdot", "ref-fifo", "unicode-nfc-nfd-names",
                    "provider-http-remote"]


@pytest.mark.parametrize("stem", SUBPROCESS_CASES)
def test_case_through_a_real_process(stem: str, tmp_path: Path) -> None:
    case = read_case(CASES_DIR / f"{stem}.yaml")
    target = materialize(case, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    for var in ("WIRO_API_KEY", "WIRO_API_SECRET", "PIXWITH_API_KEY"):
        env.pop(var, None)
    command = ["validate"] if stem != "tpl-nested-loops" else ["plan", "--yes"]
    proc = subprocess.run([sys.executable, "-m", "runner", *command, target.name],
                          cwd=target.parent, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    check_output(case, proc.returncode, proc.stdout, proc.stderr)
