"""`seedbatch validate`, `plan` and `models` through click's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.catalog import models as installed_models
from runner.cli import main, manifest_cmds

GOOD = """\
version: 1
name: cli-test
matrix: {p: [tent, boots]}
models:
  v4: {model: wiro/seedream-v4}
  pix: {model: pixwith/seedream-4.5}
jobs:
  - name: "{{ p }}-{{ model.alias }}"
    model: [v4, pix]
    prompt: "a {{ p }}"
budget: {max_usd: 1}
"""

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+) "
                  r"\(at (?P<path>\$[^)]*)\)$")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_ok(runner: CliRunner, write) -> None:
    path = write(GOOD)
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: {path} (4 jobs)\n"


def test_validate_reports_every_error_in_the_contract_format(runner: CliRunner, write) -> None:
    good = write(GOOD, "good.yaml")
    bad = write("version: 1\nfoo: 1\njobs:\n  - model: v9\n    prompt: x\n", "bad.yaml")
    result = runner.invoke(main, ["validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert result.stdout == f"ok: {good} (4 jobs)\n"
    lines = result.stderr.splitlines()
    assert lines[-1] == "2 problems found"
    parsed = [LINE.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    assert [(m["file"], m["line"], m["col"], m["path"]) for m in parsed] == [
        (str(bad), "2", "1", "$.foo"), (str(bad), "4", "12", "$.jobs[0].model")]
    assert "Traceback" not in result.output


def test_validate_yaml_syntax_error_and_missing_file(runner: CliRunner, write,
                                                     tmp_path: Path) -> None:
    broken = write("version: 1\njobs: [\n", "broken.yaml")
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(main, ["validate", str(broken), str(missing)])
    assert result.exit_code == 2
    assert f"{broken}:3:1: YAML syntax error" in result.stderr
    assert f"{missing}:1:1: no such file (at $)" in result.stderr


def test_validate_needs_a_file(runner: CliRunner) -> None:
    assert runner.invoke(main, ["validate"]).exit_code == 2


def test_plan_table(runner: CliRunner, write) -> None:
    path = write(GOOD)
    result = runner.invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cli-test" in out
    assert "wiro/seedream-v4" in out
    assert "pixwith/seedream-4.5" in out
    assert re.search(r"Total\s+│\s+│\s+│\s+4\s+│\s+4\s+│\s+\$0\.06\s+│\s+12", out), out
    assert "budget $1.00: estimate $0.06" in out
    for name in ("tent-v4", "boots-v4", "tent-pix", "boots-pix"):
        assert name in out


def test_plan_shows_first_rows_of_a_big_plan(runner: CliRunner, write) -> None:
    path = write(GOOD.replace("p: [tent, boots]", "p: [" + ", ".join(
        f"s{i}" for i in range(100)) + "]"))
    result = runner.invoke(main, ["plan", str(path), "--rows", "5"])
    assert result.exit_code == 0, result.output
    assert "Jobs (5 of 200)" in result.stdout
    assert "… and 195 more" in result.stdout
    assert "s99-pix" not in result.stdout


def test_plan_json_shape(runner: CliRunner, write) -> None:
    path = write(GOOD)
    result = runner.invoke(main, ["plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) >= {"jobs", "estimate"}
    assert len(doc["jobs"]) == 4
    for job in doc["jobs"]:
        assert {"key", "name", "provider", "model", "prompt", "params", "images"} <= set(job)
        assert re.fullmatch(r"[0-9a-f]{64}", job["key"])
    assert doc["jobs"][0]["name"] == "tent-v4"
    assert doc["jobs"][0]["params"] == {"size": "2048x2048", "maxImages": 1,
                                        "watermark": False}
    assert doc["estimate"]["jobs"] == 4
    assert doc["estimate"]["usd"] == pytest.approx(0.06)
    assert doc["estimate"]["credits"] == 12


def test_plan_invalid_manifest_exits_2(runner: CliRunner, write) -> None:
    path = write("version: 1\njobs: [{model: nope, prompt: x}]\n")
    result = runner.invoke(main, ["plan", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:16: unknown model alias or id 'nope'" in result.stderr


BIG = GOOD.replace("p: [tent, boots]", "p: [" + ", ".join(f"s{i}" for i in range(5001)) + "]")


def test_plan_guard_refuses_without_a_terminal(runner: CliRunner, write) -> None:
    path = write(BIG)  # 5,001 × 2 = 10,002 jobs
    result = runner.invoke(main, ["plan", str(path)])
    assert result.exit_code == 2
    assert "expands to 10,002 jobs" in result.stderr
    assert "--yes" in result.stderr
    assert result.stdout == ""


def test_plan_guard_passes_with_yes(runner: CliRunner, write) -> None:
    path = write(BIG)
    result = runner.invoke(main, ["plan", str(path), "--yes", "--json"])
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)["jobs"]) == 10_002


def test_plan_guard_asks_on_a_terminal(runner: CliRunner, write, monkeypatch) -> None:
    monkeypatch.setattr(manifest_cmds, "_interactive", lambda: True)
    path = write(BIG)
    declined = runner.invoke(main, ["plan", str(path)], input="n\n")
    assert declined.exit_code == 2
    assert "expands to 10,002 jobs. Plan them all?" in declined.stderr
    accepted = runner.invoke(main, ["plan", str(path), "--rows", "3"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "Jobs (3 of 10,002)" in accepted.stdout


def test_small_plans_do_not_ask(runner: CliRunner, write, monkeypatch) -> None:
    monkeypatch.setattr(manifest_cmds, "_interactive", lambda: True)
    result = runner.invoke(main, ["plan", str(write(GOOD))])
    assert result.exit_code == 0
    assert "Plan them all?" not in result.output


def test_models_json(runner: CliRunner) -> None:
    result = runner.invoke(main, ["models", "--json"])
    assert result.exit_code == 0
    models = json.loads(result.stdout)
    assert [m["id"] for m in models] == list(installed_models())
    v45 = next(m for m in models if m["id"] == "wiro/seedream-v4-5")
    assert v45["endpoint"] == "bytedance/seedream-v4-5"
    assert v45["price"]["usd_per_image"] == 0.04
    width = next(p for p in v45["params"] if p["name"] == "width")
    assert (width["type"], width["default"], width["minimum"]) == ("integer", 2048, 480)
    assert width["description"]
    assert any("3,686,400" in r for r in v45["rules"])
    v3 = next(m for m in models if m["id"] == "wiro/seedream-v3")
    size = next(p for p in v3["params"] if p["name"] == "size")
    assert "1280x720" in size["enum"]
    assert "text-to-image only: no reference images" in v3["rules"]


def test_models_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["models"])
    assert result.exit_code == 0
    for model_id in installed_models():
        assert model_id in result.stdout
    assert "aspect_ratio" in result.stdout
    assert "6 credits per image" in result.stdout


@pytest.mark.parametrize("command", ["validate", "plan", "models"])
def test_help_teaches_with_examples(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"seedbatch {command}" in result.stdout
