"""runner.config.resolve: credentials from the environment only, base URLs checked."""

from __future__ import annotations

import pytest

from runner.config import demo_credentials, resolve
from runner.errors import ConfigError

FULL_ENV = {"WIRO_API_KEY": "wk", "WIRO_API_SECRET": "ws", "PIXWITH_API_KEY": "pk"}


def test_credentials_and_default_urls_from_the_environment() -> None:
    wiro = resolve("wiro", env=FULL_ENV)
    assert (wiro.name, wiro.base_url, wiro.api_key, wiro.api_secret) == (
        "wiro", "https://api.wiro.ai/v1", "wk", "ws")
    pix = resolve("pixwith", env=FULL_ENV)
    assert (pix.base_url, pix.api_key, pix.api_secret) == ("https://api.pixwith.ai/api", "pk", "")


@pytest.mark.parametrize(("name", "missing"), [
    ("wiro", "WIRO_API_KEY"), ("wiro", "WIRO_API_SECRET"), ("pixwith", "PIXWITH_API_KEY"),
])
def test_a_missing_credential_names_its_variable(name: str, missing: str) -> None:
    env = {k: v for k, v in FULL_ENV.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        resolve(name, env=env)
    assert missing in str(info.value)
    assert info.value.exit_code == 2
    # an empty value counts as missing
    with pytest.raises(ConfigError, match=missing):
        resolve(name, env={**FULL_ENV, missing: ""})


def test_credentials_never_come_from_the_manifest() -> None:
    manifest = {"wiro": {"base_url": "https://api.wiro.ai/v1", "api_key": "from-manifest",
                         "api_secret": "from-manifest"}}
    with pytest.raises(ConfigError, match="WIRO_API_KEY"):
        resolve("wiro", manifest, env={})
    assert resolve("wiro", manifest, env=FULL_ENV).api_key == "wk"


def test_demo_fills_only_unset_credentials() -> None:
    demo = resolve("wiro", env={}, demo=True)
    assert demo.api_key == demo_credentials()["WIRO_API_KEY"]
    assert demo.api_secret == demo_credentials()["WIRO_API_SECRET"]
    assert resolve("wiro", env=FULL_ENV, demo=True).api_key == "wk"
    assert resolve("pixwith", env={}, demo=True).api_key == demo_credentials()["PIXWITH_API_KEY"]


def test_base_url_precedence() -> None:
    manifest = {"wiro": {"base_url": "https://manifest.example/v1/"}}
    assert resolve("wiro", manifest, env=FULL_ENV).base_url == "https://manifest.example/v1"
    env = {**FULL_ENV, "WIRO_BASE_URL": "https://env.example/v1"}
    assert resolve("wiro", manifest, env=env).base_url == "https://env.example/v1"
    assert resolve("wiro", manifest, env=env,
                   base_url="http://127.0.0.1:8123/wiro/v1").base_url == (
        "http://127.0.0.1:8123/wiro/v1")
    pix_env = {**FULL_ENV, "PIXWITH_BASE_URL": "https://pix.example/api"}
    assert resolve("pixwith", env=pix_env).base_url == "https://pix.example/api"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/wiro/v1", "http://localhost:9000/wiro/v1", "http://[::1]:9000/x",
    "http://127.8.9.10/x", "http://emu.localhost/x", "https://api.wiro.ai/v1",
])
def test_allowed_base_urls(url: str) -> None:
    assert resolve("wiro", env={**FULL_ENV, "WIRO_BASE_URL": url}).base_url == url.rstrip("/")


@pytest.mark.parametrize(("url", "words"), [
    ("http://api.wiro.ai/v1", "plain http"),
    ("http://10.0.0.5/v1", "plain http"),
    ("http://localhost.evil.com/v1", "plain http"),
    ("ftp://api.wiro.ai/v1", "not an http(s) URL"),
    ("api.wiro.ai/v1", "not an http(s) URL"),
])
def test_refused_base_urls_name_their_origin(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve("wiro", env={**FULL_ENV, "WIRO_BASE_URL": url})
    assert words in str(info.value)
    assert "WIRO_BASE_URL" in str(info.value)
    with pytest.raises(ConfigError) as from_manifest:
        resolve("wiro", {"wiro": {"base_url": url}}, env=FULL_ENV)
    assert "providers.wiro.base_url" in str(from_manifest.value)


def test_unknown_provider() -> None:
    with pytest.raises(ConfigError, match="no installed provider"):
        resolve("midjourney", env=FULL_ENV)


def test_settings_repr_hides_credentials() -> None:
    settings = resolve("wiro", env={"WIRO_API_KEY": "sekrit-key", "WIRO_API_SECRET": "sekrit-2"})
    assert "sekrit" not in repr(settings)
    assert settings.secrets() == ("sekrit-key", "sekrit-2")
