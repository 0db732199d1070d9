"""Provider clients, made by the installed providers' factories (:mod:`runner.plugins`).

>>> from runner.config import resolve
>>> provider = make_provider(resolve("acme"))          # doctest: +SKIP
>>> result = await provider.submit(job)                 # doctest: +SKIP

``base.py`` is the contract every client meets (the :class:`~runner.providers.base.Provider`
protocol and the common task states); ``http.py`` the plumbing the built-in clients share;
one module per built-in host.
"""

from __future__ import annotations

import httpx

from runner.config import ProviderSettings
from runner.plugins import registry
from runner.providers.base import Provider


def make_provider(
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout | None = None,
    concurrency: int = 8,
) -> Provider:
    """A client for ``settings.name``, made by its provider's factory.

    ``transport`` replaces the network (tests pass ``httpx.ASGITransport(app=...)`` or
    ``httpx.MockTransport``); ``timeout`` replaces the default (connect 10 s, read 60 s);
    ``concurrency`` sizes the connection pool for that many tasks in flight."""
    spec = registry().provider(settings.name)
    return spec.make_client(settings, transport=transport, timeout=timeout,
                            concurrency=concurrency)


__all__ = ["Provider", "make_provider"]
