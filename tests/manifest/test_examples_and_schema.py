"""The shipped example manifests, the manifest schema, and planning speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner.catalog import models as installed_models
from runner.manifest import check, load_plan
from runner.media import sniff_image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())


def test_the_four_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "ab-sweep.yaml",
                                          "edit-refs.yaml", "multi-model.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_and_names_its_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json"
    plan, errors = check(path)
    assert errors == []
    assert plan is not None
    assert plan.jobs


def test_quickstart_is_small_and_uses_both_providers() -> None:
    plan = load_plan(ROOT / "manifests" / "quickstart.yaml")
    assert 4 <= len(plan.jobs) <= 6
    assert {j.provider for j in plan.jobs} == {"wiro", "pixwith"}


def test_ab_sweep_uses_matrix_include_exclude_and_repeat() -> None:
    path = ROOT / "manifests" / "ab-sweep.yaml"
    text = path.read_text()
    for word in ("include:", "exclude:", "repeat:"):
        assert word in text
    plan = load_plan(path)
    assert {j.index for j in plan.jobs} == {0, 1}
    assert any("lens" in j.axes for j in plan.jobs)
    assert any(j.axes.get("product") == "kettle" for j in plan.jobs)
    assert not any(j.axes.get("product") == "beans" and j.axes.get("light") == "overcast"
                   for j in plan.jobs)


def test_edit_refs_uses_small_real_images_and_a_url() -> None:
    plan = load_plan(ROOT / "manifests" / "edit-refs.yaml")
    refs = {r.ref: r for j in plan.jobs for r in j.images}
    local = [r for r in refs.values() if not r.is_url]
    assert len(local) >= 2
    assert any(r.is_url for r in refs.values())
    kinds = set()
    for r in local:
        data = Path(r.path or "").read_bytes()
        assert len(data) < 20_000
        kinds.add(sniff_image(data[:16]))
    assert kinds == {("image/png", "png"), ("image/jpeg", "jpg")}


def test_multi_model_uses_all_four_models_with_one_prompt() -> None:
    plan = load_plan(ROOT / "manifests" / "multi-model.yaml")
    # the first two hosts' four models; hosts added since have manifests of their own
    assert {j.model for j in plan.jobs} == {
        m for m in installed_models() if m.startswith(("wiro/", "pixwith/"))}
    assert len({j.model for j in plan.jobs}) == 4
    assert len({j.prompt for j in plan.jobs}) == 1


def _objects(node: Any, where: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            found.extend(_objects(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_objects(value, f"{where}/{i}"))
    return found


def test_schema_is_valid_strict_and_documented() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    objects = _objects(SCHEMA)
    assert len(objects) >= 10
    for where, obj in objects:
        extra = obj.get("additionalProperties")
        if where == "$/$defs/matrix":  # axes are the user's own names: each one described
            assert extra["description"]
        else:
            assert extra is False, where
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{where}/properties/{name}"


def test_the_committed_schema_is_the_one_built_for_the_built_in_hosts() -> None:
    # Editors read schemas/manifest.schema.json; validation builds it from the registry.
    from runner.manifest.schema import manifest_schema

    assert manifest_schema() == SCHEMA
    assert SCHEMA["$defs"]["alias"]["properties"]["model"]["enum"] == list(installed_models())
    from runner.plugins import registry

    assert set(SCHEMA["properties"]["limits"]["properties"]) == set(registry().providers)


def test_schema_accepts_the_design_example() -> None:
    text = (ROOT / "manifests" / "ab-sweep.yaml").read_text()
    import yaml

    errors = list(Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(text)))
    assert errors == []


def test_the_benchmark_sweep_expands_to_the_size_it_claims(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_expand", ROOT / "bench" / "expand.py")
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text, expected = bench.sweep_manifest(10_000)
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    plan = load_plan(path)
    # speed is measured by bench/expand.py (docs/performance.md), not asserted here
    assert len(plan.jobs) == expected == 10_000
    assert len({j.key for j in plan.jobs}) == 10_000


DOC = (ROOT / "docs" / "manifest.md").read_text(encoding="utf-8")


def _block_after(marker: str, lang: str = "") -> str:
    start = DOC.index(marker)
    fence = f"```{lang}\n"
    begin = DOC.index(fence, start) + len(fence)
    return DOC[begin:DOC.index("```", begin)]


def test_the_documented_error_report_is_what_validate_prints(tmp_path: Path,
                                                             monkeypatch) -> None:
    from click.testing import CliRunner

    from runner.cli import main

    (tmp_path / "m.yaml").write_text(_block_after("(and then how many were found)", "yaml"))
    expected = _block_after("`seedbatch validate m.yaml` prints")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", "m.yaml"])
    assert result.exit_code == 2
    assert result.stderr == expected


def test_the_documented_matrix_example() -> None:
    import yaml

    from runner.manifest.matrix import expand_matrix

    doc = yaml.safe_load(_block_after("\nExample:\n", "yaml"))
    assert expand_matrix(doc["matrix"]) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "banana"},
    ]
