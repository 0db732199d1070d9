"""Portable settings — size, count, seed — turned into each model's own parameters."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runner.catalog import get_model
from runner.errors import ManifestError
from runner.jobs import Plan
from runner.spec import Portable, free_size_problem, nearest_sizes


def test_one_size_becomes_each_models_own_parameters(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("""\
        version: 1
        models:
          v45: {model: wiro/seedream-v4-5, size: 2560x1440, count: 2}
          v4: {model: wiro/seedream-v4, size: 2560x1440, count: 3}
          px: {model: pixwith/seedream-4.5, size: 2560x1440, count: 4}
          v3: {model: wiro/seedream-v3, size: 1280x720, seed: 7}
        jobs:
          - name: "{{ model.alias }}"
            model: [v45, v4, px, v3]
            prompt: a tent
    """)
    params = {j.name: j.params for j in plan.jobs}
    assert params["v45"] == {"width": 2560, "height": 1440, "maxImages": 2, "watermark": False}
    assert params["v4"] == {"size": "2560x1440", "maxImages": 3, "watermark": False}
    assert params["px"] == {"resolution": "2K", "aspect_ratio": "16:9", "num_outputs": 4,
                            "prompt_optimization": False}
    assert params["v3"]["size"] == "1280x720"
    assert params["v3"]["seed"] == 7
    # estimates follow the translated count
    assert {j.name: j.estimate.images for j in plan.jobs} == {"v45": 2, "v4": 3, "px": 4,
                                                             "v3": 1}


def test_job_overrides_alias_and_explicit_params_win(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("""\
        version: 1
        models:
          v45: {model: wiro/seedream-v4-5, size: 2560x1440, count: 2}
        jobs:
          - {name: alias, model: v45, prompt: a}
          - {name: job, model: v45, prompt: b, size: 4096x4096, count: 1}
          - {name: explicit, model: v45, prompt: c, size: 4096x4096, params: {width: 3000}}
    """)
    params = {j.name: j.params for j in plan.jobs}
    assert (params["alias"]["width"], params["alias"]["maxImages"]) == (2560, 2)
    assert (params["job"]["width"], params["job"]["height"], params["job"]["maxImages"]) == (
        4096, 4096, 1)
    assert (params["explicit"]["width"], params["explicit"]["height"]) == (3000, 4096)


def test_the_key_is_the_final_host_parameters(plan_of: Callable[..., Plan],
                                              only: Callable[[str], ManifestError]) -> None:
    portable = plan_of("""\
        version: 1
        jobs: [{name: a, model: wiro/seedream-v4-5, prompt: a, size: 2560x1440}]
    """, "portable.yaml").jobs[0]
    native = plan_of("""\
        version: 1
        jobs: [{name: a, model: wiro/seedream-v4-5, prompt: a,
                params: {width: 2560, height: 1440}}]
    """, "native.yaml").jobs[0]
    assert portable.params == native.params
    assert portable.key == native.key
    # and so, in one manifest, the two are the same request: refused as paid twice
    err = only("""\
        version: 1
        jobs:
          - {name: portable, model: wiro/seedream-v4-5, prompt: a, size: 2560x1440}
          - {name: native, model: wiro/seedream-v4-5, prompt: a,
             params: {width: 2560, height: 1440}}
    """)
    assert "asks exactly what job 'portable' asks" in err.message


def test_templated_settings_sweep_a_matrix(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("""\
        version: 1
        matrix: {size: [2048x2048, 2560x1440], n: [1, 2]}
        jobs:
          - name: "{{ size }}-{{ n }}"
            model: wiro/seedream-v4-5
            prompt: a
            size: "{{ size }}"
            count: "{{ n }}"
    """)
    got = {j.name: (j.params["width"], j.params["height"], j.params["maxImages"])
           for j in plan.jobs}
    assert got == {"2048x2048-1": (2048, 2048, 1), "2048x2048-2": (2048, 2048, 2),
                   "2560x1440-1": (2560, 1440, 1), "2560x1440-2": (2560, 1440, 2)}


def test_a_size_a_model_cannot_make_names_the_nearest(only: Callable[[str], ManifestError]
                                                      ) -> None:
    err = only("""\
        version: 1
        models:
          px: {model: pixwith/seedream-4.5, size: 2000x1000}
        jobs:
          - {name: a, model: px, prompt: a}
    """)
    assert (err.line, err.path) == (3, "$.models.px.size")
    assert "pixwith/seedream-4.5 cannot make 2000x1000" in err.message
    assert "nearest: 2K 16:9 (2560x1440)" in err.message


def test_too_few_pixels_for_seedream_45(only: Callable[[str], ManifestError]) -> None:
    err = only("""\
        version: 1
        jobs:
          - {name: a, model: wiro/seedream-v4-5, prompt: a,
             size: 1024x1024}
    """)
    assert (err.line, err.path) == (4, "$.jobs[0].size")
    assert "cannot make 1024x1024" in err.message
    assert "3,686,400–16,777,216 pixels" in err.message
    assert "nearest: 1920x1920" in err.message


def test_unsupported_settings_are_refused_with_what_the_model_takes(
        problems: Callable[[str], list[ManifestError]]) -> None:
    errors = problems("""\
        version: 1
        jobs:
          - {name: a, model: wiro/seedream-v4, prompt: a, seed: 3}
          - {name: b, model: wiro/seedream-v3, prompt: a, count: 2}
          - {name: c, model: pixwith/seedream-4.5, prompt: a, count: 5}
    """)
    messages = [(e.path, e.message) for e in errors]
    assert messages[0][0] == "$.jobs[0].seed"
    assert "wiro/seedream-v4 has no portable 'seed' setting (it supports: size, count)" in \
        messages[0][1]
    assert messages[1][0] == "$.jobs[1].count"
    assert "makes one image per job (count: 2); use repeat: 2" in messages[1][1]
    assert messages[2][0] == "$.jobs[2].count"
    assert "at most 4 images per job (count: 5)" in messages[2][1]


@pytest.mark.parametrize(("line", "message"), [
    ("size: big", "size must be WIDTHxHEIGHT in pixels, e.g. 2048x1536 (got 'big')"),
    ("size: '0x100'", "width and height must be at least 1"),
    ("size: 0x100", "expected a string, got an integer (256)"),  # YAML reads hex
    ("count: 1.5", "count must be a whole number (got 1.5)"),
    ("seed: -1", "seed must be 0 or more (got -1)"),
    ("count: 0", "count must be at least 1"),
])
def test_bad_values_are_located(only: Callable[[str], ManifestError], line: str,
                                message: str) -> None:
    err = only(f"""\
        version: 1
        jobs:
          - name: a
            model: wiro/seedream-v4
            prompt: a
            {line}
    """)
    assert err.line == 6
    assert message in err.message


def test_a_rendered_bad_value_names_the_combination(only: Callable[[str], ManifestError]
                                                    ) -> None:
    err = only("""\
        version: 1
        matrix: {s: [2048x2048, huge]}
        jobs:
          - name: "{{ s }}"
            model: wiro/seedream-v4-5
            prompt: a
            size: "{{ s }}"
    """)
    assert err.line == 7
    assert "size must be WIDTHxHEIGHT" in err.message
    assert "'huge'" in err.message
    assert "s='huge'" in err.message or "s=huge" in err.message


def test_translate_passes_reference_counts_and_only_given_settings() -> None:
    model = get_model("wiro/seedream-v4")
    assert model is not None
    assert model.translate(Portable(), 0) == ({}, [])
    assert model.translate(Portable(count=2), 3) == ({"maxImages": 2}, [])


def test_size_helpers() -> None:
    choices = {"a": (1024, 1024), "b": (1280, 720), "c": (720, 1280)}
    assert nearest_sizes((1300, 700), choices, k=2) == ["b (1280x720)", "a (1024x1024)"]
    model = get_model("wiro/seedream-v4-5")
    assert model is not None
    assert free_size_problem(model, (2048, 2048), min_pixels=3_686_400) is None
    why = free_size_problem(model, (4096, 100), max_aspect=16, min_pixels=1)
    assert why is not None
    assert "aspect ratio" in why
