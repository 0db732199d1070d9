"""The provider registry as a user meets it: a manifest naming a model of a provider that is
not installed (or installed but left out by SEEDBATCH_PLUGINS) fails validation with a
located error saying what to do; a plugin that cannot be loaded is named, once, and never
takes a command down.

Registries here are built from chosen entry points, so the demo plugin is "not installed"
whether or not this environment has it (CI's main venv does not; a developer's may).
"""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import plugins
from runner.cli import main

MANIFEST = """\
version: 1
name: tiles
models:
  tile: {model: demo/pattern-v1, params: {n: 2}}
jobs:
  - name: chevrons
    model: tile
    prompt: "teal chevrons"
"""
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+) "
                  r"\(at (?P<path>\$[^)]*)\)$")
KEEP: list[plugins.Registry] = []  # registries stay alive: validators are cached by id()


def builtin_points() -> list[EntryPoint]:
    return [ep for ep in entry_points(group=plugins.GROUP) if ep.name in ("wiro", "pixwith")]


def use_registry(monkeypatch: pytest.MonkeyPatch, reg: plugins.Registry) -> None:
    """Make ``reg`` this process's registry for the current SEEDBATCH_PLUGINS value."""
    KEEP.append(reg)
    monkeypatch.setitem(plugins._cache, os.environ.get(plugins.PLUGINS_VAR), reg)


def test_a_model_of_a_plugin_not_installed_names_the_package(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_registry(monkeypatch, plugins.build_registry(builtin_points()))
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if LINE.match(ln)]
    assert len(lines) == 1, result.output
    found = LINE.match(lines[0])
    assert found is not None
    assert (found["file"], found["line"], found["col"]) == (str(path), "4", "17")
    assert found["path"] == "$.models.tile.model"
    assert found["msg"] == ("model 'demo/pattern-v1': no installed provider 'demo' (installed: "
                            "pixwith, wiro); install seedbatch-demo "
                            "(examples/plugins/seedbatch-demo in seedbatch's repository)")


def test_a_provider_left_out_by_seedbatch_plugins_says_so() -> None:
    reg = plugins.build_registry(builtin_points(), only="wiro")
    assert reg.skipped == ("pixwith",)
    assert sorted(reg.providers) == ["wiro"]
    assert plugins.missing_provider_message("pixwith", reg) == (
        "provider 'pixwith' is installed but not loaded: SEEDBATCH_PLUGINS is set and does not "
        "name it")
    assert plugins.build_registry(builtin_points(), only="").providers == {}


BROKEN = [
    EntryPoint("gone", "seedbatch_no_such_module:SPEC", plugins.GROUP),
    EntryPoint("text", "runner.version:__version__", plugins.GROUP),
    EntryPoint("wiro2", "runner.hosts.wiro:SPEC", plugins.GROUP),
]


def test_plugins_that_cannot_load_are_recorded_and_the_rest_load() -> None:
    reg = plugins.build_registry([*builtin_points(), *BROKEN])
    assert sorted(reg.providers) == ["pixwith", "wiro"]
    assert reg.problems == [
        "plugin 'gone' (seedbatch_no_such_module:SPEC) could not be loaded: "
        "ModuleNotFoundError: No module named 'seedbatch_no_such_module'",
        "plugin 'text' (runner.version:__version__) could not be loaded: TypeError: '0.1.0' "
        "is not a ProviderSpec nor a function returning some",
        "plugin wiro2 = runner.hosts.wiro:SPEC: provider 'wiro' is already registered by "
        "wiro = runner.hosts.wiro:SPEC; ignored",
    ]


def test_every_command_names_a_broken_plugin_once_and_plugins_json_lists_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_registry(monkeypatch, plugins.build_registry([*builtin_points(), BROKEN[0]]))
    runner = CliRunner()
    first = runner.invoke(main, ["plugins", "--json"])
    assert first.exit_code == 0
    warning = ("warning: plugin 'gone' (seedbatch_no_such_module:SPEC) could not be loaded: "
               "ModuleNotFoundError: No module named 'seedbatch_no_such_module'")
    assert first.output.count(warning) == 1
    listed = json.loads(first.output[first.output.index("{"):])
    assert [p["name"] for p in listed["providers"]] == ["pixwith", "wiro"]
    assert listed["problems"] == [warning.removeprefix("warning: ")]
    again = runner.invoke(main, ["models", "--json"])  # the same process: said once
    assert again.exit_code == 0
    assert warning not in again.output
    table = runner.invoke(main, ["plugins"])
    assert table.exit_code == 0
    assert f"failed       {warning.removeprefix('warning: ')}" in table.output.splitlines()
