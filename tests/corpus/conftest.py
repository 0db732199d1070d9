"""The bad-input corpus: case files, their headers, and what each needs at test time.

Every ``cases/*.yaml`` file starts with comment lines::

    # attack: what the file attacks
    # expect: a fragment the error message must contain
    # at: LINE:COL          (optional: where that message must point)
    # setup: DIRECTIVE      (optional: something git cannot store, made at test time)

Setup directives (paths relative to the case's folder): ``fifo PATH``,
``dangling-symlink PATH``, ``symlink-loop PATH``, ``sparse PATH MIB`` (a file that starts
like a PNG and is MIB mebibytes long without taking the space).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CASES_DIR = Path(__file__).parent / "cases"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Case:
    """One corpus file and what its header promises."""

    path: Path
    attack: str
    expect: str
    at: str = ""
    setup: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def read_case(path: Path) -> Case:
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    fields: dict[str, str] = {}
    for line in raw.split(b"\n"):
        if not line.startswith(b"# "):
            break
        key, sep, value = line[2:].decode("utf-8").partition(": ")
        if sep:
            fields[key] = value
    return Case(path, fields.get("attack", ""), fields.get("expect", ""), fields.get("at", ""),
                fields.get("setup", ""))


def all_cases() -> list[Case]:
    return [read_case(p) for p in sorted(CASES_DIR.glob("*.yaml"))]


def materialize(case: Case, tmp_path: Path) -> Path:
    """Copy the case and its fixture files into ``tmp_path``, run its setup; the copy's path."""
    work = tmp_path / "case"
    shutil.copytree(CASES_DIR / "refs", work / "refs")
    target = work / case.name
    shutil.copyfile(case.path, target)
    if case.setup:
        verb, *args = case.setup.split()
        place = work / args[0]
        if verb == "fifo":
            os.mkfifo(place)
        elif verb == "dangling-symlink":
            place.symlink_to("does-not-exist.png")
        elif verb == "symlink-loop":
            other = place.with_name("loop-partner.png")
            place.symlink_to(other.name)
            other.symlink_to(place.name)
        elif verb == "sparse":
            with place.open("wb") as fh:
                fh.write(PNG_SIGNATURE)
                fh.truncate(int(args[1]) * 1024 * 1024)
        else:  # pragma: no cover - a typo in a case header
            raise AssertionError(f"{case.name}: unknown setup {case.setup!r}")
    return target


class NetworkAttempts(list[tuple[str, Any]]):
    """Every attempt to reach the network while the fixture is active."""


@contextmanager
def blocked_network() -> Iterator[NetworkAttempts]:
    """Refuse (and record) every outgoing connection and name lookup."""
    attempts = NetworkAttempts()

    def refuse(what: str) -> Any:
        def _refuse(*args: Any, **kwargs: Any) -> Any:
            attempts.append((what, args[1:] if what.startswith("socket.") else args))
            raise OSError(f"network access during a bad-input test: {what}")

        return _refuse

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        yield attempts


@pytest.fixture
def no_network() -> Iterator[NetworkAttempts]:
    """The network is blocked for the test, and the test fails if anything tried it."""
    with blocked_network() as attempts:
        yield attempts
    assert attempts == [], f"network was used: {attempts}"
