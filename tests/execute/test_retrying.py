"""``call_retrying``: the first try outside stamina, the rest through it, attempts counted."""

from __future__ import annotations

from typing import Any

import pytest

from runner.execute import retrying

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky:
    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc or ConnectionError("down")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


@pytest.fixture
def first_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits call_retrying itself makes (stamina's own are not recorded)."""
    waits: list[float] = []
    real = retrying._sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real(0)

    monkeypatch.setattr(retrying, "_sleep", sleep)
    return waits


FAST: dict[str, Any] = {"wait_initial": 0.001, "wait_max": 0.002, "wait_jitter": 0.001}


async def test_a_call_that_succeeds_is_made_once_and_never_waits(first_waits: list[float]
                                                                 ) -> None:
    call = Flaky(0)
    assert await retrying.call_retrying(call, on=lambda exc: True, attempts=5, **FAST) == "ok"
    assert call.calls == 1
    assert first_waits == []


async def test_failures_are_retried_up_to_the_attempts_in_all(first_waits: list[float]) -> None:
    call = Flaky(2)
    assert await retrying.call_retrying(call, on=lambda exc: True, attempts=3, **FAST) == "ok"
    assert call.calls == 3
    assert len(first_waits) == 1  # the rest were stamina's
    assert 0.001 <= first_waits[0] <= 0.002

    never = Flaky(10)
    with pytest.raises(ConnectionError):
        await retrying.call_retrying(never, on=lambda exc: True, attempts=4, **FAST)
    assert never.calls == 4

    once = Flaky(10)
    with pytest.raises(ConnectionError):
        await retrying.call_retrying(once, on=lambda exc: True, attempts=1, **FAST)
    assert once.calls == 1


async def test_the_hook_decides_whether_and_how_long(first_waits: list[float]) -> None:
    refused = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retrying.call_retrying(refused, on=lambda exc: False, attempts=5, **FAST)
    assert refused.calls == 1
    assert first_waits == []

    seen: list[Exception] = []

    def hook(exc: Exception) -> float:
        seen.append(exc)
        return 0.0015  # e.g. a Retry-After: waited as given

    told = Flaky(1)
    assert await retrying.call_retrying(told, on=hook, attempts=None, **FAST) == "ok"
    assert first_waits == [0.0015]
    assert len(seen) == 1  # the hook hears each failure once
