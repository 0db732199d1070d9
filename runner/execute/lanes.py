"""One lane per provider: its client, its in-flight slots, its request gate, the submit pace.

:class:`Lane` bundles what the executor needs to talk to one provider within its limits;
:class:`SlotHolder` is one job's hold on one of the lane's slots (taken and given back at
most once each time, whatever path the job takes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from runner.errors import FatalProviderError
from runner.execute.limits import AdaptiveSlots, EffectiveLimits, RequestGate
from runner.providers.base import Provider

#: Jobs of one provider between their dispatch and their submit's end, by default: enough to
#: keep its connections busy and to group many submits' journal commits into one.
SUBMITS_AT_ONCE = 64


@dataclass
class Lane:
    """One provider: its client, slots, request gate, and whether it said something fatal."""

    name: str
    provider: Provider
    limits: EffectiveLimits
    slots: AdaptiveSlots
    gate: RequestGate
    fatal: FatalProviderError | None = None
    spacing: Callable[[], float] = lambda: 0.0
    # Jobs between their dispatch and their submit's end. A job waiting for its turn to be
    # submitted is only an entry in the dispatcher's list, not a task of its own.
    submits: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SUBMITS_AT_ONCE))
    _next_submit: float = 0.0

    async def pace_submit(self) -> None:
        """Space the starts of submits (see ``ExecutorOptions.submit_spacing``)."""
        spacing = self.spacing()
        if spacing <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next_submit)
        self._next_submit = at + spacing
        if at > now:
            await asyncio.sleep(at - now)


class SlotHolder:
    """One job's hold on a provider slot: acquired and released at most once each time."""

    def __init__(self, slots: AdaptiveSlots, *, held: bool) -> None:
        self.slots = slots
        self.held = held

    async def acquire(self) -> None:
        if not self.held:
            await self.slots.acquire()
            self.held = True

    def take_now(self) -> None:
        """Hold a slot at once, over the target if need be (a task already in flight)."""
        if not self.held:
            self.slots.take_now()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()
