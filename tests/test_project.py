"""The project's own promises: CI runs the README's test command, the schemas load."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must open with a ```sh block of the two fresh-machine commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    example, tests = commands
    assert "--emulate" in example
    assert "manifests/" in example
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    last_line = [ln for ln in ci.splitlines() if ln.strip()][-1]
    assert last_line == tests


def test_every_schema_is_valid_json_schema() -> None:
    from jsonschema import Draft202012Validator

    files = sorted((ROOT / "schemas").rglob("*.json"))
    assert len(files) >= 4
    for path in files:
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
