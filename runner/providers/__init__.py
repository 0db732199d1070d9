"""Provider clients, keyed by provider name.

>>> from runner.config import resolve
>>> provider = make_provider(resolve("wiro"))          # doctest: +SKIP
>>> result = await provider.submit(job)                 # doctest: +SKIP
"""

from __future__ import annotations

import httpx

from runner.config import ProviderSettings
from runner.errors import ConfigError
from runner.providers.base import Provider
from runner.providers.pixwith import PixwithProvider
from runner.providers.wiro import WiroProvider

PROVIDERS: dict[str, type[WiroProvider] | type[PixwithProvider]] = {
    "wiro": WiroProvider,
    "pixwith": PixwithProvider,
}


def make_provider(
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout | None = None,
    concurrency: int = 8,
) -> WiroProvider | PixwithProvider:
    """A client for ``settings.name``; both kinds implement :class:`Provider`.

    ``transport`` replaces the network (tests pass ``httpx.ASGITransport(app=...)`` or
    ``httpx.MockTransport``); ``timeout`` replaces the default (connect 10 s, read 60 s);
    ``concurrency`` sizes the connection pool for that many tasks in flight."""
    if settings.name == "wiro":
        return WiroProvider(base_url=settings.base_url, api_key=settings.api_key,
                            api_secret=settings.api_secret, transport=transport,
                            timeout=timeout, concurrency=concurrency)
    if settings.name == "pixwith":
        return PixwithProvider(base_url=settings.base_url, api_key=settings.api_key,
                               transport=transport, timeout=timeout, concurrency=concurrency)
    raise ConfigError(f"unknown provider {settings.name!r}; known: {', '.join(PROVIDERS)}")


__all__ = ["PROVIDERS", "PixwithProvider", "Provider", "WiroProvider", "make_provider"]
