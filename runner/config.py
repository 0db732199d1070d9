"""Provider settings: credentials from the environment only, base URLs checked.

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
    var = BASE_URL_VARS[name]
    if base_url:
        base = check_base_url(base_url, "emulator")
    elif env.get(var):
        base = check_base_url(env[var], var)
    elif manifest_providers and manifest_providers.get(name, {}).get("base_url"):
        base = check_base_url(manifest_providers[name]["base_url"], f"providers.{name}.base_url")
    else:
        base = DEFAULT_BASE_URLS[name]
    return ProviderSettings(name, base, values[0], values[1] if len(values) > 1 else "")
