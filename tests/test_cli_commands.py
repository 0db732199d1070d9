"""The command line loads a command's module only when that command is asked for."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import runner.cli
from runner.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def test_the_command_table_names_every_command_and_its_module() -> None:
    for info in pkgutil.iter_modules(runner.cli.__path__):
        importlib.import_module(f"runner.cli.{info.name}")
    registered = {name: cmd.callback.__module__.rsplit(".", 1)[-1]
                  for name, cmd in main.commands.items() if cmd.callback is not None}
    assert registered == COMMANDS


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"\n  {name} " in result.output


def test_an_unknown_command_is_refused() -> None:
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2
    assert "No such command 'nonsense'" in result.output


def test_plan_imports_neither_executor_nor_emulator_nor_http_client(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nmodels:\n  v4: {model: wiro/seedream-v4}\n"
                        "jobs:\n  - {name: one, model: v4, prompt: a tent}\n", encoding="utf-8")
    code = ("import sys\nfrom runner.cli import main\n"
            "try:\n    main(['plan', sys.argv[1], '--json', '--runs-dir', sys.argv[2]])\n"
            "except SystemExit:\n    pass\n"
            "print('\\n' + ' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, str(manifest), str(tmp_path / "runs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body, _, loaded = done.stdout.rstrip("\n").rpartition("\n")
    assert json.loads(body)["jobs"][0]["name"] == "one"
    modules = set(loaded.split())
    assert "runner.cli.manifest_cmds" in modules
    for heavy in ("runner.api", "runner.execute.executor", "runner.emulator", "httpx", "rich",
                  "runner.cli.run_cmds", "runner.cli.emulate_cmd", "runner.review",
                  # the report's renderers and journal reader: plan reads only its cache
                  "runner.report.html", "runner.report.source", "runner.execute.journal",
                  "PIL"):
        assert heavy not in modules, heavy
    assert isinstance(main, click.Group)
