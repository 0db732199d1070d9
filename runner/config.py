"""Provider settings: credentials from the environment only, base URLs checked, and whether
a base URL is a seedbatch emulator (:func:`is_emulator`).

Each provider declares (its :class:`~runner.spec.ProviderSpec`) the environment variables
that hold its credentials — read from the environment and never anywhere else — and the one
that holds its base URL. A base URL comes from that variable, else the manifest's
``providers:`` section, else the provider's public endpoint. Plain ``http://`` is refused
except for loopback hosts (the emulator).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from runner.errors import ConfigError
from runner.plugins import registry


def credential_vars(name: str) -> tuple[str, ...]:
    """The environment variables that hold provider ``name``'s credentials."""
    return registry().provider(name).credentials


def all_credential_vars() -> tuple[str, ...]:
    """Every installed provider's credential variables (to mask wherever they might show)."""
    return tuple(var for spec in registry().providers.values() for var in spec.credentials)


def base_url_var(name: str) -> str:
    return registry().provider(name).base_url_var


def demo_credentials() -> dict[str, str]:
    """What the emulators accept when the credential variables are unset."""
    found: dict[str, str] = {}
    for spec in registry().providers.values():
        if spec.emulator is not None:
            found.update(spec.emulator.credentials)
    return found


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(default="", repr=False)
    # where a host that pushes completion is listened to; None: every task is polled
    # (realtime off, or no push address known for this endpoint)
    push_url: str | None = None

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_key, self.api_secret) if s)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, origin: str) -> str:
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # both parse lazily, and may raise
    except ValueError as exc:  # an unclosed [IPv6 address, a port out of range, …
        raise ConfigError(f"{origin}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigError(f"{origin}: {url!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{origin}: a base URL must not hold a user name or password "
                          f"(credentials come from the environment only)")
    if parts.scheme == "http" and not is_loopback(hostname):
        raise ConfigError(f"{origin}: plain http:// is refused for {hostname} (credentials "
                          f"would travel in clear); use https://, or a loopback host")
    return url.rstrip("/")


def resolve(
    name: str,
    manifest_providers: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    demo: bool = False,
    base_url: str | None = None,
    push_url: str | None = None,
) -> ProviderSettings:
    """Settings for provider ``name``.

    ``demo`` fills unset credentials with the emulator's; ``base_url`` and ``push_url`` (the
    emulator's addresses under ``--emulate``) win over the environment and the manifest."""
    env = os.environ if env is None else env
    spec = registry().provider(name)
    demo_values = spec.emulator.credentials if spec.emulator is not None else {}
    values = []
    for var in spec.credentials:
        value = env.get(var, "")
        if not value and demo:
            value = demo_values.get(var, "")
        if not value:
            raise ConfigError(f"{var} is not set: export {var}=… with your {name} credentials "
                              f"(seedbatch reads credentials from the environment only)")
        values.append(value)
    base = base_url_for(name, manifest_providers, env, base_url=base_url)
    push = push_url_for(name, base, manifest_providers, env, push_url=push_url)
    return ProviderSettings(name, base, values[0], values[1] if len(values) > 1 else "", push)


#: ``SEEDBATCH_REALTIME=0`` (or false/no/off): poll every task, whatever the hosts push.
REALTIME_VAR = "SEEDBATCH_REALTIME"


def realtime_enabled(name: str, manifest_providers: Mapping[str, Mapping[str, object]] | None,
                     env: Mapping[str, str]) -> bool:
    """Whether provider ``name``'s pushed completion is used: ``SEEDBATCH_REALTIME`` off
    wins, then the manifest's ``providers.<name>.realtime`` (default true)."""
    if env.get(REALTIME_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    section = (manifest_providers or {}).get(name) or {}
    return section.get("realtime", True) is not False


def check_push_url(url: str, origin: str) -> str:
    """A websocket address: ws:// only for loopback hosts, like plain http."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise ConfigError(f"{origin}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not hostname:
        raise ConfigError(f"{origin}: {url!r} is not a ws(s):// URL")
    if parts.scheme == "ws" and not is_loopback(hostname):
        raise ConfigError(f"{origin}: plain ws:// is refused for {hostname}; use wss://, or a "
                          f"loopback host")
    return url


def push_url_for(name: str, base_url: str,
                 manifest_providers: Mapping[str, Mapping[str, object]] | None = None,
                 env: Mapping[str, str] | None = None, *,
                 push_url: str | None = None) -> str | None:
    """Where provider ``name`` pushes completion, or None (poll): ``push_url`` (the
    emulator's, under ``--emulate``), else its ``push_url_var``, else its public address
    when the base URL is the public one; None when realtime is off or the host pushes
    nothing."""
    env = os.environ if env is None else env
    spec = registry().provider(name)
    if not spec.push_completion or not realtime_enabled(name, manifest_providers, env):
        return None
    if push_url:
        return check_push_url(push_url, "emulator")
    if spec.push_url_var and env.get(spec.push_url_var):
        return check_push_url(env[spec.push_url_var], spec.push_url_var)
    if base_url == spec.default_base_url:
        return spec.default_push_url
    return None


def base_url_for(name: str, manifest_providers: Mapping[str, Mapping[str, str]] | None = None,
                 env: Mapping[str, str] | None = None, *, base_url: str | None = None) -> str:
    """Provider ``name``'s base URL: ``base_url`` (the emulator's, under ``--emulate``), else
    its ``*_BASE_URL`` variable, else the manifest's ``providers:``, else the public one."""
    env = os.environ if env is None else env
    spec = registry().provider(name)
    var = spec.base_url_var
    if base_url:
        return check_base_url(base_url, "emulator")
    if env.get(var):
        return check_base_url(env[var], var)
    if manifest_providers and manifest_providers.get(name, {}).get("base_url"):
        return check_base_url(manifest_providers[name]["base_url"],
                              f"providers.{name}.base_url")
    return spec.default_base_url


#: What the emulator's index (``GET /__``) answers with, to tell it from a real endpoint.
EMULATOR_IDENTITY = "seedbatch emulator"


def is_emulator(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``base_url`` is served by a seedbatch emulator: only a loopback host can be
    one (plain http is refused elsewhere), and then its index says so itself. A loopback
    endpoint that does not answer as the emulator (a tunnel or proxy to the real API) is
    real."""
    parts = urlsplit(base_url)
    if not is_loopback(parts.hostname or ""):
        return False
    import httpx

    try:
        response = httpx.get(f"{parts.scheme}://{parts.netloc}/__", timeout=timeout,
                             follow_redirects=False)
        doc = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("name") == EMULATOR_IDENTITY


def emulated_providers(providers: Sequence[str], manifest_providers: Mapping[str, Any],
                       env: Mapping[str, str], *, emulate: bool) -> frozenset[str]:
    """Which of ``providers`` a run reaches through an emulator: every one under
    ``--emulate``; otherwise those whose base URL is a seedbatch emulator (it says so)."""
    if emulate:
        return frozenset(providers)
    return frozenset(name for name in providers
                     if is_emulator(base_url_for(name, manifest_providers, env)))
