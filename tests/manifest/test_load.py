"""The YAML loader: positions of every node, and hostile input refused with a location."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import ManifestErrors
from runner.manifest import load
from runner.manifest.load import parse_text, read_document


def _errors(text: str) -> list:
    with pytest.raises(ManifestErrors) as info:
        parse_text(text, "m.yaml")
    return info.value.problems


def test_positions_of_values_and_keys_by_json_path() -> None:
    doc = parse_text("version: 1\njobs:\n  - model: v4\n    prompt: |\n      hello\n", "m.yaml")
    assert doc.data == {"version": 1, "jobs": [{"model": "v4", "prompt": "hello\n"}]}
    assert doc.pos(("jobs", 0, "model")).line == 3
    assert doc.pos(("jobs", 0, "model")).col == 12
    assert doc.pos(("jobs", 0, "model"), key=True).col == 5
    assert doc.pos(("jobs", 0, "prompt")).style == "|"
    # a path that does not exist falls back to its nearest ancestor
    assert doc.pos(("jobs", 0, "nothing")).line == 3
    where = doc.where(("jobs", 0, "prompt"))
    assert (where.file, where.line, where.col, where.path) == ("m.yaml", 4, 13,
                                                               "$.jobs[0].prompt")


def test_json_path_quotes_odd_keys() -> None:
    assert load.json_path(("image_sets", "my set", 0)) == "$.image_sets['my set'][0]"
    assert load.json_path(()) == "$"


def test_syntax_error_is_located() -> None:
    (err,) = _errors("version: 1\njobs: [a, b\nname: x\n")
    assert err.message == ("YAML syntax error: did not find expected ',' or ']' while parsing "
                           "a flow sequence that starts on line 2")
    assert (err.file, err.line, err.col, err.path) == ("m.yaml", 3, 5, "$")


def test_bad_indentation_is_located() -> None:
    (err,) = _errors("version: 1\njobs:\n  - model: a\n   prompt: b\n")
    assert err.message.startswith("YAML syntax error")
    assert (err.line, err.col) == (4, 4)


def test_duplicate_key_is_an_error_at_the_second_key() -> None:
    (err,) = _errors("version: 1\nname: a\nname: b\n")
    assert "duplicate key 'name' (first defined on line 2)" in err.message
    assert (err.line, err.col, err.path) == (3, 1, "$.name")


def test_non_string_keys_are_refused() -> None:
    errors = _errors("version: 1\n1: one\nyes: true\n? [a, b]\n: c\n")
    messages = [e.message for e in errors]
    assert any("key '1' is read as an integer" in m for m in messages)
    assert any("key 'yes' is read as a boolean" in m for m in messages)
    assert any("not a list or mapping" in m for m in messages)
    assert [e.line for e in errors] == [2, 3, 4]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    (err,) = _errors("\n".join(lines) + "\n")
    assert "more than 250,000 YAML nodes" in err.message


def test_merge_key_bomb_is_refused() -> None:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
    for i in range(1, 10):
        refs = ", ".join([f"*m{i - 1}"] * 10)
        lines.append(f"m{i}: &m{i} {{<<: [{refs}]}}")
    errors = _errors("\n".join(lines) + "\n")
    assert any("YAML nodes" in e.message for e in errors)


def test_recursive_alias_is_refused() -> None:
    (err,) = _errors("version: 1\nx: &a [1, *a]\n")
    assert "recursive alias" in err.message
    assert err.line == 2


def test_anchors_aliases_and_merge_keys_work() -> None:
    doc = parse_text(
        "x-base: &base {model: wiro/seedream-v4, params: {size: 1024x1024}}\n"
        "models:\n"
        "  a: *base\n"
        "  b:\n"
        "    <<: *base\n"
        "    model: wiro/seedream-v3\n", "m.yaml")
    assert doc.data["models"]["a"] == {"model": "wiro/seedream-v4",
                                       "params": {"size": "1024x1024"}}
    assert doc.data["models"]["b"] == {"model": "wiro/seedream-v3",
                                       "params": {"size": "1024x1024"}}
    assert doc.pos(("models", "b", "model")).line == 6  # the explicit key wins
    assert doc.pos(("models", "b", "params", "size")).line == 1  # where it was written


def test_deep_nesting_is_refused() -> None:
    errors = _errors("x: " + "[" * 100 + "]" * 100 + "\n")
    assert any("nesting deeper than 64 levels" in e.message for e in errors)


def test_unknown_tags_and_non_finite_numbers_are_refused() -> None:
    errors = _errors("a: !!binary aGVsbG8=\nb: !custom x\nc: .nan\nd: -.inf\n")
    assert [e.line for e in errors] == [1, 2, 3, 4]
    assert "unsupported YAML tag" in errors[0].message
    assert "not a finite number" in errors[2].message


def test_dates_stay_text() -> None:
    assert parse_text("when: 2024-01-31\n", "m.yaml").data == {"when": "2024-01-31"}


def test_empty_and_non_mapping_documents() -> None:
    assert "empty" in _errors("# nothing\n")[0].message
    assert "not a list" in _errors("- a\n- b\n")[0].message
    assert "single value" in _errors("just text\n")[0].message


def test_multiple_documents_are_refused() -> None:
    (err,) = _errors("version: 1\n---\nversion: 1\n")
    assert "single document" in err.message
    assert err.line == 2


def test_control_character_is_located() -> None:
    (err,) = _errors("version: 1\nname: a\x07b\n")
    assert (err.line, err.col) == (2, 8)


def test_huge_file_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(load, "MAX_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\n" + "# padding\n" * 200)
    with pytest.raises(ManifestErrors) as info:
        read_document(path)
    assert "at most" in info.value.problems[0].message


def test_missing_folder_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestErrors, match="no such file"):
        read_document(tmp_path / "nope.yaml")
    with pytest.raises(ManifestErrors, match="folder"):
        read_document(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(ManifestErrors) as info:
        read_document(bad)
    err = info.value.problems[0]
    assert "not UTF-8" in err.message
    assert (err.line, err.col) == (2, 10)


def test_raw_bytes_are_kept_exactly(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbfversion: 1   \r\njobs: []\r\n# trailing comment"
    path = tmp_path / "m.yaml"
    path.write_bytes(raw)
    doc = read_document(path)
    assert doc.raw == raw
    assert doc.data == {"version": 1, "jobs": []}
