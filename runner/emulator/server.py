"""Serving the emulator over a real loopback socket: in a background thread, or in front."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from runner.emulator.app import create_app
from runner.emulator.config import EmulatorConfig
from runner.emulator.state import Clock
from runner.errors import ConfigError
from runner.plugins import Registry, missing_provider_message, registry


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (``port=0`` picks a free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio then sets TCP_NODELAY on accepted connections (with
    # proto 0 it does not, and every keep-alive answer waits ~40 ms for delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        # listening from now on: a client that connects as soon as the address is printed
        # waits in the backlog until the server accepts, instead of being refused
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class EmulatorServer:
    """A running emulator: where it listens, and its counters."""

    url: str
    app: Starlette

    def base_url(self, provider: str) -> str:
        """Where ``provider``'s emulated API is (its ``EmulatorSpec.path`` under the root)."""
        spec = self.app.state.emulator.specs.get(provider)
        if spec is None or spec.emulator is None:
            installed = registry().providers.get(provider)
            if installed is None:
                raise ConfigError(missing_provider_message(provider))
            if installed.emulator is None:
                raise ConfigError(f"provider {provider!r} ships no emulator")
            raise ConfigError(f"provider {provider!r} is not served by this emulator")
        return f"{self.url}{spec.emulator.path}"

    def push_url(self, provider: str) -> str:
        """Where ``provider``'s push channel (a websocket) is (``EmulatorSpec.push_path``)."""
        self.base_url(provider)  # the same errors for a provider not served
        spec = self.app.state.emulator.specs[provider].emulator
        if not spec.push_path:
            raise ConfigError(f"provider {provider!r} pushes nothing in this emulator")
        return f"ws{self.url[len('http'):]}{spec.push_path}"

    def __getattr__(self, name: str) -> str:
        """``server.<provider>_base_url`` / ``server.<provider>_push_url``, e.g.
        ``server.acme_base_url``."""
        if name.endswith("_base_url") and not name.startswith("_"):
            return self.base_url(name[: -len("_base_url")])
        if name.endswith("_push_url") and not name.startswith("_"):
            return self.push_url(name[: -len("_push_url")])
        raise AttributeError(name)

    def stats(self) -> dict[str, Any]:
        """``GET /__stats`` as a dict."""
        response = httpx.get(f"{self.url}/__stats", timeout=10)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def reset(self) -> None:
        httpx.post(f"{self.url}/__reset", timeout=10).raise_for_status()

    def set_faults(self, spec: str) -> None:
        httpx.post(f"{self.url}/__faults", json={"faults": spec}, timeout=10).raise_for_status()


def make_server(app: Starlette, *, log_level: str = "warning",
                access_log: bool = False) -> uvicorn.Server:
    # httptools (llhttp, in C) parses and writes HTTP/1.1 for a fraction of the CPU of h11,
    # uvicorn's pure-Python default: a fifth of the emulator's request handling.
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="off",
                            timeout_graceful_shutdown=2, timeout_keep_alive=30,
                            ws="websockets-sansio", http="httptools")
    return uvicorn.Server(config)


@contextlib.contextmanager
def app_in_thread(app: Starlette, host: str = "127.0.0.1", port: int = 0, *,
                  what: str = "the emulator", log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` on ``host:port`` (a free port by default) in a background thread.

    Yields its URL once the socket accepts connections; stops the server and joins the
    thread on exit. ``what`` names the app in the error raised when it does not start."""
    sock = bind_socket(host, port)
    server = make_server(app, log_level=log_level)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the waiting caller
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"seedbatch: {what}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"{what} did not start: {failure[0] if failure else '?'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"{what} did not start within 15 s")
        time.sleep(0.01)
    bound_host, bound_port = sock.getsockname()[:2]
    try:
        yield url_for(host if host else bound_host, bound_port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_in_thread(config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                    port: int = 0, *, log_level: str = "warning",
                    clock: Clock | None = None,
                    registry: Registry | None = None) -> Iterator[EmulatorServer]:
    """Run the emulator on ``host:port`` (a free port by default) in a background thread.

    Yields an :class:`EmulatorServer` once the socket accepts connections; stops the server
    and joins the thread on exit. ``clock`` (unix seconds) replaces the real one and
    ``registry`` the installed providers, as for :func:`create_app`; the clock is called
    from the server's thread."""
    app = create_app(config or EmulatorConfig(), clock=clock, registry=registry)
    with app_in_thread(app, host, port, log_level=log_level) as url:
        yield EmulatorServer(url, app)
