"""A host's completion pushed over a websocket: many tasks per connection, polling as fallback.

:class:`PushChannel` is the generic half of a client for hosts that push task events over a
JSON websocket (``ProviderSpec.push_completion``). A host client gives it two functions —
the subscription frame for a task's token, and the reading of one frame into a
:class:`PushEvent` — and implements :class:`~runner.providers.base.CompletionPush` with it.
A third, ``wanted``, may say from a frame's text that it can be neither an end nor progress:
it is then not decoded (a host may send a dozen stage changes per task).

* :meth:`PushChannel.subscribe` registers a task right after its submit's answer; the frame
  goes out on one of a few shared connections (``per_socket`` tasks each, at most
  ``max_sockets``), opened on first need.
* The executor asks :meth:`PushChannel.pushing` (is an end still expected from the host?)
  and waits with :meth:`PushChannel.wait_end`, racing its own polling schedule.
* A refused or dropped connection marks every task it carried *lost*: their waits return at
  once and the executor polls them on its ordinary schedule. Later subscriptions are not
  attempted until a backoff (×2 from ``backoff_initial``, jittered, at most ``backoff_max``)
  has passed; a connection that has answered resets it.
* A silent connection is not detected here: the executor polls when silence outlasts what
  the task should take (``PollSettings.push_silence*``).

Nothing here is ever a source of truth: the end a push announces is confirmed (and its cost
and outputs read) by one status request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

EventKind = Literal["end", "progress", "activity"]
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class PushEvent:
    """One frame as the host client reads it: whose task, and what it says."""

    token: str
    kind: EventKind  # end: the task reached a terminal state; progress: a percentage
    percent: float | None = None


@dataclass(slots=True)
class _Watch:
    task_id: str
    token: str
    conn: _Connection | None = None
    # the follower's wait, while it waits (a future, not an Event: no deque per task)
    waiter: asyncio.Future[None] | None = None
    ended: bool = False
    lost: bool = False

    def settle(self, *, ended: bool) -> None:
        """The end was pushed (``ended``) or will never be (lost): wake the follower."""
        if ended:
            self.ended = True
        else:
            self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Connection:
    """One websocket and the tasks it carries."""

    def __init__(self, channel: PushChannel) -> None:
        self.channel = channel
        self.watches: dict[str, _Watch] = {}  # token → watch
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._run())
        self.closed = False

    def add(self, watch: _Watch) -> None:
        watch.conn = self
        self.watches[watch.token] = watch
        self.outbox.put_nowait(self.channel.frame(watch.token))

    async def _run(self) -> None:
        import aiohttp

        channel = self.channel
        answered = False
        headers = {"User-Agent": channel.user_agent} if channel.user_agent else None
        try:
            # aiohttp's websocket reads frames in C; no proxy, no compression, as before
            async with aiohttp.ClientSession(trust_env=False) as session:
                async with asyncio.timeout(channel.open_timeout):
                    ws = await session.ws_connect(channel.url, compress=0, headers=headers,
                                                  autoping=True)
                try:
                    channel.connected += 1
                    channel.reset_backoff()
                    writer = asyncio.get_running_loop().create_task(self._write(ws))
                    try:
                        async for message in ws:
                            if message.type is aiohttp.WSMsgType.TEXT:
                                answered = True
                                channel.on_frame(self, message.data)
                            elif message.type is aiohttp.WSMsgType.BINARY:
                                answered = True  # binary frames carry no task events
                            else:  # an error: the connection is gone
                                break
                    finally:
                        writer.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError,
                                                 OSError):
                            await writer
                finally:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        await ws.close()
        except asyncio.CancelledError:
            raise
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("push channel %s: %s: %s", channel.url, type(exc).__name__, exc)
        finally:
            self.closed = True
            channel.connection_ended(self, answered)

    async def _write(self, ws: Any) -> None:
        while True:
            frame = await self.outbox.get()
            await ws.send_str(frame)


class PushChannel:
    """Task subscriptions over a few shared websocket connections (see the module's doc)."""

    def __init__(self, url: str, *, frame: Callable[[str], str],
                 parse: Callable[[Mapping[str, Any]], PushEvent | None],
                 wanted: Callable[[str], bool] | None = None,
                 per_socket: int = 1000, max_sockets: int = 8,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 open_timeout: float = 10.0, user_agent: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.url = url
        self.frame = frame
        self.parse = parse
        self.wanted = wanted
        self.per_socket = per_socket
        self.max_sockets = max_sockets
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.user_agent = user_agent
        self.rng = rng or random.Random()
        self.on_progress: ProgressCallback | None = None
        self._watches: dict[str, _Watch] = {}  # task id → watch
        self._by_token: dict[str, _Watch] = {}
        self._connections: list[_Connection] = []
        self._backoff = 0.0
        self._retry_at = 0.0
        self.connected = 0  # connections opened (for tests and benchmarks)
        self.failures = 0  # connections refused or dropped

    # -- the executor's side ----------------------------------------------------------------

    def subscribe(self, task_id: str, token: str) -> bool:
        """Ask the host to push ``task_id``'s events (``token``: the host's key for them).
        False when no connection may be opened now (backing off after a failure)."""
        if task_id in self._watches and not self._watches[task_id].lost:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            return False
        conn = self._connection()
        if conn is None:
            return False
        watch = _Watch(task_id, token)
        self._watches[task_id] = watch
        self._by_token[token] = watch
        conn.add(watch)
        return True

    def pushing(self, task_id: str) -> bool:
        """Whether the host may still push ``task_id``'s end (subscribed, not lost)."""
        watch = self._watches.get(task_id)
        return watch is not None and not watch.lost

    async def wait_end(self, task_id: str, within: float) -> bool:
        """Wait up to ``within`` seconds for ``task_id``'s end: True once pushed; False on
        timeout, or at once when no end will be pushed (see :meth:`pushing`)."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        if not (watch.ended or watch.lost):
            watch.waiter = asyncio.get_running_loop().create_future()
            # asyncio.timeout, not wait_for: no task of its own per waiting task
            try:
                async with asyncio.timeout(within):
                    await watch.waiter
            except TimeoutError:
                pass
            finally:
                watch.waiter = None
        return watch.ended

    def forget(self, task_id: str) -> None:
        """The task is no longer followed: drop its subscription."""
        watch = self._watches.pop(task_id, None)
        if watch is None:
            return
        self._by_token.pop(watch.token, None)
        if watch.conn is not None:
            watch.conn.watches.pop(watch.token, None)

    async def aclose(self) -> None:
        conns, self._connections = self._connections, []
        for conn in conns:
            conn.task.cancel()
        for conn in conns:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task

    # -- connections --------------------------------------------------------------------------

    def _connection(self) -> _Connection | None:
        live = [c for c in self._connections if not c.closed]
        self._connections = live
        if live:
            least = min(live, key=lambda c: len(c.watches))
            if len(least.watches) < self.per_socket or len(live) >= self.max_sockets:
                return least
        try:
            conn = _Connection(self)
        except RuntimeError:  # pragma: no cover - no running loop
            return None
        self._connections.append(conn)
        return conn

    def reset_backoff(self) -> None:
        self._backoff = 0.0

    def connection_ended(self, conn: _Connection, answered: bool) -> None:
        """A connection closed (refused, dropped, or closed by us): its tasks are lost to
        polling, and the next connection waits for the backoff."""
        with contextlib.suppress(ValueError):
            self._connections.remove(conn)
        for watch in conn.watches.values():
            if not watch.ended:
                watch.settle(ended=False)
        conn.watches.clear()
        self.failures += 1
        if answered:
            self._backoff = self.backoff_initial
        else:
            self._backoff = min(self.backoff_max, max(self.backoff_initial, self._backoff * 2))
        with contextlib.suppress(RuntimeError):
            now = asyncio.get_running_loop().time()
            self._retry_at = now + self.rng.uniform(self._backoff / 2, self._backoff)

    def on_frame(self, conn: _Connection, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            return  # binary frames (audio models) carry no task events
        if self.wanted is not None and not self.wanted(raw):
            return  # mere activity: not worth decoding
        try:
            doc = json.loads(raw)
        except ValueError:
            return
        if not isinstance(doc, Mapping):
            return
        event = self.parse(doc)
        if event is None:
            return
        watch = self._by_token.get(event.token)
        if watch is None:
            return
        if event.kind == "end":
            watch.settle(ended=True)
        elif event.kind == "progress" and event.percent is not None \
                and self.on_progress is not None:
            self.on_progress(watch.task_id, event.percent)
