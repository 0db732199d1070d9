"""Provider settings: credentials from the environment only, base URLs checked, and whether
a base URL is a seedbatch emulator (:func:`is_emulator`).

Credentials come from ``WIRO_API_KEY``, ``WIRO_API_SECRET`` and ``PIXWITH_API_KEY`` and never
anywhere else. Base URLs come from ``WIRO_BASE_URL`` / ``PIXWITH_BASE_URL``, else the
manifest's ``providers:`` section, else the public endpoints. Plain ``http://`` is refused
except for loopback hosts (the emulator).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from runner.errors import ConfigError

DEFAULT_BASE_URLS = {
    "wiro": "https://api.wiro.ai/v1",
    "pixwith": "https://api.pixwith.ai/api",
}
CREDENTIAL_VARS = {
    "wiro": ("WIRO_API_KEY", "WIRO_API_SECRET"),
    "pixwith": ("PIXWITH_API_KEY",),
}
BASE_URL_VARS = {"wiro": "WIRO_BASE_URL", "pixwith": "PIXWITH_BASE_URL"}

# Credentials the built-in emulator accepts when the variables above are unset.
# Pixwith's is the test key its documentation publishes.
DEMO_CREDENTIALS = {
    "WIRO_API_KEY": "demo-wiro-key",
    "WIRO_API_SECRET": "demo-wiro-secret",
    "PIXWITH_API_KEY": "key_00000000000000000000000000000000",
}


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(default="", repr=False)

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
) -> ProviderSettings:
    """Settings for provider ``name``.

    ``demo`` fills unset credentials with the emulator's; ``base_url`` (the emulator's address
    under ``--emulate``) wins over the environment and the manifest."""
    env = os.environ if env is None else env
    if name not in CREDENTIAL_VARS:
        raise ConfigError(f"unknown provider {name!r}; known: {', '.join(CREDENTIAL_VARS)}")
    values = []
    for var in CREDENTIAL_VARS[name]:
        value = env.get(var, "")
        if not value and demo:
            value = DEMO_CREDENTIALS[var]
        if not value:
            raise ConfigError(f"{var} is not set: export {var}=… with your {name} credentials "
                              f"(seedbatch reads credentials from the environment only)")
        values.append(value)
    base = base_url_for(name, manifest_providers, env, base_url=base_url)
    return ProviderSettings(name, base, values[0], values[1] if len(values) > 1 else "")


def base_url_for(name: str, manifest_providers: Mapping[str, Mapping[str, str]] | None = None,
                 env: Mapping[str, str] | None = None, *, base_url: str | None = None) -> str:
    """Provider ``name``'s base URL: ``base_url`` (the emulator's, under ``--emulate``), else
    its ``*_BASE_URL`` variable, else the manifest's ``providers:``, else the public one."""
    env = os.environ if env is None else env
    var = BASE_URL_VARS[name]
    if base_url:
        return check_base_url(base_url, "emulator")
    if env.get(var):
        return check_base_url(env[var], var)
    if manifest_providers and manifest_providers.get(name, {}).get("base_url"):
        return check_base_url(manifest_providers[name]["base_url"],
                              f"providers.{name}.base_url")
    return DEFAULT_BASE_URLS[name]


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
