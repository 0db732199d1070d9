"""Matrix expansion follows GitHub Actions' rules exactly."""

from __future__ import annotations

import pytest

from runner.manifest.matrix import MatrixError, expand_matrix


def test_product_in_declared_order_last_axis_fastest() -> None:
    combos = expand_matrix({"b": [1, 2], "a": ["x", "y", "z"]})
    assert combos == [
        {"b": 1, "a": "x"}, {"b": 1, "a": "y"}, {"b": 1, "a": "z"},
        {"b": 2, "a": "x"}, {"b": 2, "a": "y"}, {"b": 2, "a": "z"},
    ]
    assert [list(c) for c in combos] == [["b", "a"]] * 6  # key order as declared


def test_no_matrix_is_one_empty_combination() -> None:
    assert expand_matrix(None) == [{}]
    assert expand_matrix({}) == [{}]


def test_exclude_removes_every_combination_matching_all_its_keys_partially() -> None:
    combos = expand_matrix({
        "os": ["linux", "mac"], "py": [3.11, 3.12], "arch": ["x64", "arm"],
        "exclude": [{"os": "mac", "arch": "x64"}],  # partial: any py
    })
    assert {"os": "mac", "py": 3.11, "arch": "x64"} not in combos
    assert {"os": "mac", "py": 3.12, "arch": "x64"} not in combos
    assert len(combos) == 6
    assert {"os": "mac", "py": 3.11, "arch": "arm"} in combos


def test_exclude_needs_all_keys_to_match() -> None:
    combos = expand_matrix({"a": [1, 2], "b": [1, 2], "exclude": [{"a": 1, "b": 2}]})
    assert combos == [{"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 2, "b": 2}]


def test_exclude_key_that_is_not_an_axis_is_an_error() -> None:
    with pytest.raises(MatrixError, match="'c'"):
        expand_matrix({"a": [1], "exclude": [{"c": 1}]})


def test_include_extends_matching_combinations() -> None:
    combos = expand_matrix({"fruit": ["apple", "pear"], "animal": ["cat", "dog"],
                            "include": [{"fruit": "apple", "shape": "circle"}]})
    assert combos == [
        {"fruit": "apple", "animal": "cat", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "shape": "circle"},
        {"fruit": "pear", "animal": "cat"},
        {"fruit": "pear", "animal": "dog"},
    ]


def test_include_that_matches_nothing_is_a_new_combination() -> None:
    combos = expand_matrix({"fruit": ["apple"], "include": [{"fruit": "banana"}]})
    assert combos == [{"fruit": "apple"}, {"fruit": "banana"}]


def test_include_never_overwrites_original_values() -> None:
    # `animal: cat` conflicts with dog combinations, so only cat ones are extended;
    # the entry can never turn a dog into a cat
    combos = expand_matrix({"fruit": ["apple"], "animal": ["cat", "dog"],
                            "include": [{"animal": "cat", "color": "pink"}]})
    assert combos == [{"fruit": "apple", "animal": "cat", "color": "pink"},
                      {"fruit": "apple", "animal": "dog"}]


def test_include_may_overwrite_values_added_by_an_earlier_include() -> None:
    combos = expand_matrix({"fruit": ["apple", "pear"],
                            "include": [{"color": "green"},
                                        {"fruit": "apple", "color": "red"}]})
    assert combos == [{"fruit": "apple", "color": "red"}, {"fruit": "pear", "color": "green"}]


def test_github_documentation_example() -> None:
    # docs.github.com: "Expanding or adding matrix configurations"
    combos = expand_matrix({
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    })
    assert combos == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_exclude_applies_before_include() -> None:
    combos = expand_matrix({"a": [1, 2], "exclude": [{"a": 2}], "include": [{"a": 2, "x": 1}]})
    assert combos == [{"a": 1}, {"a": 2, "x": 1}]  # the include re-adds a=2 as a new one


def test_matrix_of_only_includes() -> None:
    assert expand_matrix({"include": [{"a": 1}, {"a": 2, "b": 3}]}) == [{"a": 1},
                                                                         {"a": 2, "b": 3}]


def test_values_compare_with_their_yaml_types() -> None:
    combos = expand_matrix({"flag": [True, 1], "exclude": [{"flag": 1}]})
    assert combos == [{"flag": True}]


def test_job_level_matrix_replaces_the_top_level_one(plan_of) -> None:
    plan = plan_of("""
        version: 1
        matrix: {product: [tent, boots], light: [dusk]}
        models: {v4: {model: wiro/seedream-v4}}
        jobs:
          - name: "top-{{ product }}"
            model: v4
            prompt: "{{ product }} at {{ light }}"
          - name: "own-{{ product }}"
            model: v4
            matrix: {product: [lamp]}
            prompt: "{{ product }}"
          - name: once
            model: v4
            matrix: {}
            prompt: "just once"
    """)
    assert [j.name for j in plan.jobs] == ["top-tent", "top-boots", "own-lamp", "once"]
    assert [dict(j.axes) for j in plan.jobs] == [
        {"product": "tent", "light": "dusk"}, {"product": "boots", "light": "dusk"},
        {"product": "lamp"}, {}]


def test_job_level_matrix_hides_top_level_keys(problems) -> None:
    errors = problems("""
        version: 1
        matrix: {light: [dusk]}
        models: {v4: {model: wiro/seedream-v4}}
        jobs:
          - name: own
            model: v4
            matrix: {product: [lamp]}
            prompt: "{{ product }} at {{ light }}"
    """)
    assert len(errors) == 1
    assert errors[0].message.startswith("undefined variable 'light'")
    assert (errors[0].line, errors[0].col) == (8, 13)
