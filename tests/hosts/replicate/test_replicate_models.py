"""Replicate's two Seedream models as seedbatch sees them: their schemas, limits, cross-field
rules, estimates, and what portable settings (size, count, seed) become."""

from __future__ import annotations

import pytest

from runner.catalog import get_model
from runner.spec import ModelSpec, Portable


def model(model_id: str) -> ModelSpec:
    spec = get_model(model_id)
    assert spec is not None
    return spec


V4, V45 = "replicate/seedream-4", "replicate/seedream-4.5"


def test_the_models_and_their_documented_defaults() -> None:
    assert model(V4).endpoint == "bytedance/seedream-4"
    assert model(V45).endpoint == "bytedance/seedream-4.5"
    common = {"size": "2K", "aspect_ratio": "match_input_image", "width": 2048,
              "height": 2048, "sequential_image_generation": "disabled", "max_images": 1}
    assert model(V4).defaults == {**common, "enhance_prompt": True}
    assert model(V45).defaults == {**common, "disable_safety_checker": False}
    assert model(V4).max_input_images == 10
    assert model(V45).max_input_images == 14
    assert model(V4).price.usd_per_image == 0.03
    assert model(V45).price.usd_per_image == 0.04


def test_seedream_4_5_has_no_1k_and_no_enhance_prompt() -> None:
    [(where, message)] = model(V45).check(model(V45).with_defaults({"size": "1K"}), 0)
    assert where == "params.size"
    assert "'1K' is not one of ['2K', '4K', 'custom']" in message
    [(where, message)] = model(V45).check(model(V45).with_defaults(
        {"enhance_prompt": False}), 0)
    assert where == "params.enhance_prompt"
    assert "has no parameter 'enhance_prompt'" in message
    assert model(V4).check(model(V4).with_defaults({"size": "1K"}), 0) == []


@pytest.mark.parametrize(("model_id", "refs"), [(V4, 10), (V45, 14)])
def test_reference_images_are_counted(model_id: str, refs: int) -> None:
    spec = model(model_id)
    assert spec.check(spec.with_defaults({}), refs) == []
    problems = dict(spec.check(spec.with_defaults({}), refs + 1))
    assert f"takes at most {refs} reference images ({refs + 1} given)" in problems["images"]


def test_references_plus_max_images_must_stay_within_15_under_sequential_generation() -> None:
    spec = model(V45)
    auto = spec.with_defaults({"sequential_image_generation": "auto", "max_images": 12})
    assert spec.check(auto, 3) == []
    [(where, message)] = spec.check(auto, 4)
    assert where == "params.max_images"
    assert "reference images (4) + max_images (12) must be ≤ 15" in message
    # without sequential generation one image comes back, whatever max_images says
    disabled = spec.with_defaults({"max_images": 15})
    assert spec.check(disabled, 14) == []


def test_estimates_count_max_images_only_under_sequential_generation() -> None:
    spec = model(V4)
    assert spec.images_per_job(spec.with_defaults({"max_images": 6})) == 1
    assert spec.images_per_job(spec.with_defaults(
        {"sequential_image_generation": "auto", "max_images": 6})) == 6
    assert spec.images_per_job(spec.with_defaults({"sequential_image_generation": "auto"})) == 1


@pytest.mark.parametrize("model_id", [V4, V45])
def test_portable_size_becomes_custom_width_and_height(model_id: str) -> None:
    spec = model(model_id)
    params, problems = spec.translate(Portable(size=(2560, 1440)), 0)
    assert problems == []
    assert params == {"size": "custom", "width": 2560, "height": 1440}
    assert spec.check(spec.with_defaults(params), 0) == []
    params, problems = spec.translate(Portable(size=(1024, 4096)), 0)
    assert (params, problems) == ({"size": "custom", "width": 1024, "height": 4096}, [])


@pytest.mark.parametrize(("size", "nearest"), [((512, 512), "1024x1024"),
                                               ((8192, 4096), "4096x2048"),
                                               ((5000, 1000), "4096x1024")])
def test_a_size_outside_1024_to_4096_is_refused_with_the_nearest(
        size: tuple[int, int], nearest: str) -> None:
    params, problems = model(V4).translate(Portable(size=size), 0)
    assert params == {}
    [(setting, message)] = problems
    assert setting == "size"
    assert message.startswith(f"{V4} cannot make {size[0]}x{size[1]}: each side must be "
                              f"1024–4096")
    assert message.endswith(f"nearest: {nearest}")


def test_portable_count_becomes_sequential_generation() -> None:
    spec = model(V45)
    assert spec.translate(Portable(count=4), 0) == (
        {"sequential_image_generation": "auto", "max_images": 4}, [])
    assert spec.translate(Portable(count=1), 0) == (
        {"sequential_image_generation": "disabled", "max_images": 1}, [])
    params, _ = spec.translate(Portable(count=4), 0)
    assert spec.images_per_job(spec.with_defaults(params)) == 4
    assert spec.translate(Portable(count=16), 0) == (
        {}, [("count", f"{V45} makes 1 to 15 images per job (max_images), not 16")])


def test_size_and_count_together() -> None:
    params, problems = model(V4).translate(Portable(size=(2048, 1536), count=3), 2)
    assert problems == []
    assert params == {"size": "custom", "width": 2048, "height": 1536,
                      "sequential_image_generation": "auto", "max_images": 3}


@pytest.mark.parametrize("model_id", [V4, V45])
def test_seed_is_refused_the_models_have_no_seed_input(model_id: str) -> None:
    spec = model(model_id)
    assert "seed" not in spec.schema["properties"]
    assert set(spec.portable_support) == {"size", "count"}
    params, problems = spec.translate(Portable(seed=7), 0)
    assert params == {}
    [(setting, message)] = problems
    assert setting == "seed"
    assert message == (f"{model_id} has no portable 'seed' setting (it supports: size, "
                       f"count); set its own parameter under params: instead")
