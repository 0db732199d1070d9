"""The provider registry: entry points, SEEDBATCH_PLUGINS, broken plugins, and what the rest of
seedbatch builds from it (catalog, settings, schema, located errors, --emulate refusal)."""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import catalog, plugins
from runner.cli import main
from runner.config import credential_vars, resolve
from runner.jobs import Price
from runner.manifest.schema import manifest_schema
from runner.spec import ModelSpec, ProviderSpec

ACME_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {"size": {"type": "integer", "minimum": 64, "default": 512}},
    "x-seedbatch": {"max_input_images": 0},
}


def acme_spec(name: str = "acme", *, emulator: bool = False) -> ProviderSpec:
    return ProviderSpec(
        name=name, title=name.title(),
        models=(ModelSpec(f"{name}/fast-v1", name, "fast", "Fast v1", ACME_SCHEMA,
                          Price(usd_per_image=0.01), "test price"),),
        credentials=(f"{name.upper()}_KEY",), base_url_var=f"{name.upper()}_BASE_URL",
        default_base_url=f"https://api.{name}.invalid/v1",
        client=lambda settings, **kw: None,  # type: ignore[arg-type,return-value]
    )


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where a test writes plugin modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[name]


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=plugins.GROUP)


def write_module(where: Path, name: str, body: str) -> None:
    (where / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


PLUGIN_MODULE = """
    from runner.jobs import Price
    from runner.spec import ModelSpec, ProviderSpec

    def _client(settings, **kw):
        raise NotImplementedError

    def make(name):
        schema = {"type": "object", "properties": {}, "additionalProperties": False}
        return ProviderSpec(name=name, title=name, client=_client,
                            models=(ModelSpec(name + "/m1", name, "m1", "M1", schema,
                                              Price(usd_per_image=0.02)),),
                            credentials=(name.upper() + "_KEY",),
                            base_url_var=name.upper() + "_BASE_URL",
                            default_base_url="https://" + name + ".invalid")

    SPEC = make("acme")

    def register():
        return [make("beta"), make("gamma")]
"""


def test_the_built_in_hosts_are_registered_through_the_entry_point_group() -> None:
    found = {ep.name: ep.value for ep in entry_points(group=plugins.GROUP)}
    assert found["wiro"] == "runner.hosts.wiro:SPEC"
    assert found["pixwith"] == "runner.hosts.pixwith:SPEC"
    reg = plugins.build_registry(entry_points(group=plugins.GROUP), "wiro,pixwith")
    assert sorted(reg.providers) == ["pixwith", "wiro"]
    assert reg.origins["wiro"].distribution == "seedbatch"
    assert reg.problems == []


def test_specs_and_functions_returning_them_load(plugin_dir: Path) -> None:
    write_module(plugin_dir, "fakeplug_ok", PLUGIN_MODULE)
    reg = plugins.build_registry([point("acme", "fakeplug_ok:SPEC"),
                                  point("more", "fakeplug_ok:register")])
    assert sorted(reg.providers) == ["acme", "beta", "gamma"]
    assert set(reg.models) == {"acme/m1", "beta/m1", "gamma/m1"}
    assert reg.problems == []


def test_seedbatch_plugins_limits_what_loads(plugin_dir: Path) -> None:
    write_module(plugin_dir, "fakeplug_ok", PLUGIN_MODULE)
    points = [point("acme", "fakeplug_ok:SPEC"), point("more", "fakeplug_ok:register")]
    reg = plugins.build_registry(points, "acme")
    assert sorted(reg.providers) == ["acme"]
    assert reg.skipped == ("more",)
    assert plugins.build_registry(points, "").providers == {}  # empty: none at all


def test_a_broken_plugin_is_reported_by_name_and_the_rest_load(plugin_dir: Path) -> None:
    write_module(plugin_dir, "fakeplug_ok", PLUGIN_MODULE)
    write_module(plugin_dir, "fakeplug_broken", "import no_such_module_anywhere\n")
    write_module(plugin_dir, "fakeplug_wrong", "SPEC = 42\n")
    reg = plugins.build_registry([point("acme", "fakeplug_ok:SPEC"),
                                  point("broken", "fakeplug_broken:SPEC"),
                                  point("wrong", "fakeplug_wrong:SPEC")])
    assert sorted(reg.providers) == ["acme"]
    assert len(reg.problems) == 2
    assert "plugin 'broken'" in reg.problems[0]
    assert "ModuleNotFoundError" in reg.problems[0]
    assert "plugin 'wrong'" in reg.problems[1]
    assert "not a ProviderSpec" in reg.problems[1]


def test_a_provider_registered_twice_or_with_foreign_models_is_refused() -> None:
    reg = plugins.Registry()
    reg.add(acme_spec(), plugins.Origin("acme = a:SPEC"))
    reg.add(acme_spec(), plugins.Origin("acme2 = b:SPEC"))
    bad = replace(acme_spec("beta"), models=acme_spec().models)  # models named acme/…
    reg.add(bad, plugins.Origin("beta = c:SPEC"))
    assert sorted(reg.providers) == ["acme"]
    assert "already registered by acme = a:SPEC" in reg.problems[0]
    assert "must belong to provider 'beta'" in reg.problems[1]


@pytest.fixture
def with_acme(monkeypatch: pytest.MonkeyPatch) -> plugins.Registry:
    """The current registry plus a fake provider ``acme`` (no emulator)."""
    real = plugins.registry()
    fake = plugins.Registry(providers={**real.providers, "acme": acme_spec()},
                            origins={**real.origins,
                                     "acme": plugins.Origin("acme = acme:SPEC", "acme-dist",
                                                            "1.2.3")})
    monkeypatch.setitem(plugins._cache, os.environ.get(plugins.PLUGINS_VAR), fake)
    return fake


def test_catalog_settings_and_schema_come_from_the_registry(with_acme: plugins.Registry) -> None:
    assert "acme/fast-v1" in catalog.models()
    assert catalog.get_model("acme/fast-v1") is with_acme.providers["acme"].models[0]
    assert credential_vars("acme") == ("ACME_KEY",)
    settings = resolve("acme", env={"ACME_KEY": "k"})
    assert settings.base_url == "https://api.acme.invalid/v1"
    assert resolve("acme", env={"ACME_KEY": "k", "ACME_BASE_URL": "https://x.test"}
                   ).base_url == "https://x.test"
    schema = manifest_schema()
    assert "acme/fast-v1" in schema["$defs"]["alias"]["properties"]["model"]["enum"]
    assert "acme" in schema["properties"]["limits"]["properties"]
    assert "acme" in schema["properties"]["providers"]["properties"]
    assert "ACME_KEY" in schema["properties"]["providers"]["description"]


def test_a_model_of_a_provider_not_installed_gets_a_located_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: t\nmodels:\n  a: {model: demo/pattern-v1}\n"
                        "jobs:\n  - name: one\n    model: a\n    prompt: hi\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["validate", str(manifest)])
    assert res.exit_code == 2
    assert f"{manifest}:4:" in res.stderr
    assert "no installed provider 'demo'" in res.stderr
    assert "seedbatch-demo" in res.stderr  # the package that provides it
    manifest.write_text("version: 1\nname: t\njobs:\n  - name: one\n    model: zeta/x1\n"
                        "    prompt: hi\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["validate", str(manifest)])
    assert res.exit_code == 2
    assert f"{manifest}:5:" in res.stderr
    assert "no installed provider 'zeta'" in res.stderr
    assert "install the plugin that provides it" in res.stderr


def test_a_provider_left_out_by_seedbatch_plugins_says_so(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.PLUGINS_VAR, "pixwith")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: t\njobs:\n  - name: one\n    model: wiro/seedream-v4"
                        "\n    prompt: hi\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["validate", str(manifest)])
    assert res.exit_code == 2
    assert "provider 'wiro' is installed but not loaded: SEEDBATCH_PLUGINS" in res.stderr
    shown = CliRunner().invoke(main, ["models", "--json"])
    assert '"wiro/' not in shown.stdout
    assert '"pixwith/seedream-4.5"' in shown.stdout


def test_emulate_is_refused_for_a_provider_without_an_emulator(
        tmp_path: Path, with_acme: plugins.Registry) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: t\njobs:\n  - name: one\n    model: acme/fast-v1\n"
                        "    prompt: hi\n", encoding="utf-8")
    runs = tmp_path / "runs"
    res = CliRunner().invoke(main, ["run", str(manifest), "--emulate", "--yes",
                                    "--runs-dir", str(runs)], env={"ACME_KEY": ""})
    assert res.exit_code == 2
    assert "provider acme ships no emulator; nothing was sent" in res.stderr
    assert not runs.exists()


def test_plugins_command_lists_providers_packages_and_problems(
        with_acme: plugins.Registry) -> None:
    with_acme.problems.append("plugin 'broken' (x:SPEC) could not be loaded: ImportError: no")
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0
    assert "acme" in res.stdout
    assert "acme-dist 1.2.3" in res.stdout
    assert "cannot cancel" not in res.stdout.split("acme-dist")[1].split("\n")[1]
    assert "no emulator" in res.stdout
    assert "warning: plugin 'broken'" in res.stderr  # named once, the command goes on
    again = CliRunner().invoke(main, ["plugins", "--json"])
    assert '"distribution": "acme-dist"' in again.stdout
    assert "warning" not in again.stderr


def test_no_core_module_names_a_provider() -> None:
    """Only a provider's own files (its client, its emulator, its host module) name it."""
    root = Path(__file__).resolve().parent.parent / "runner"
    own = ("providers/wiro.py", "providers/pixwith.py", "hosts/wiro.py", "hosts/pixwith.py")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in own or rel.startswith("emulator/"):  # the emulator: tests/emulator
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "wiro" in line.lower() or "pixwith" in line.lower():
                offenders.append(f"runner/{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_the_manifest_reference_lists_exactly_the_built_in_models() -> None:
    import re

    docs = (Path(__file__).resolve().parent.parent / "docs" / "manifest.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9.-]+/[^`]+)` \| ", docs, flags=re.M))
    assert listed == set(catalog.models())
