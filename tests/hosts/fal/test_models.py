"""The fal models as seedbatch checks them before anything is sent: portable settings made
into fal parameters exactly (or refused, saying what the model can make), the schema, and
the cross-field rules fal's pages state."""

from __future__ import annotations

import pytest
from fal_support import V4, V45

from runner.catalog import get_model
from runner.spec import ModelSpec, Portable


def model(model_id: str) -> ModelSpec:
    found = get_model(model_id)
    assert found is not None
    return found


@pytest.mark.parametrize("model_id", [V4, V45])
def test_size_count_and_seed_become_image_size_num_images_and_seed(model_id: str) -> None:
    params, problems = model(model_id).translate(Portable(size=(2560, 1440), count=3, seed=42), 0)
    assert problems == []
    assert params == {"image_size": {"width": 2560, "height": 1440}, "num_images": 3,
                      "max_images": 1, "seed": 42}
    final = model(model_id).with_defaults(params)
    assert model(model_id).check(final, 0) == []
    assert model(model_id).images_per_job(final) == 3  # exactly N images


def test_a_size_below_4_5s_pixel_floor_is_refused_with_the_nearest_it_makes() -> None:
    assert model(V4).translate(Portable(size=(1280, 720)), 0) == (
        {"image_size": {"width": 1280, "height": 720}}, [])
    params, problems = model(V45).translate(Portable(size=(1280, 720)), 0)
    assert params == {}
    assert problems == [("size", "fal/seedream-v4.5 cannot make 1280x720: width × height must "
                         "be 3,686,400–16,777,216 pixels; nearest: 2560x1440")]


def test_a_side_beyond_4096_or_a_ratio_beyond_16_is_refused() -> None:
    _, problems = model(V4).translate(Portable(size=(5000, 1000)), 0)
    assert [s for s, _ in problems] == ["size"]
    assert "each side must be 1–4096" in problems[0][1]
    _, problems = model(V4).translate(Portable(size=(4096, 200)), 0)
    assert "width × height must be 921,600–16,777,216 pixels" in problems[0][1]
    assert "the aspect ratio must be between 1:16 and 16:1" in problems[0][1]


@pytest.mark.parametrize("count", [0, 7])
def test_a_count_fal_cannot_make_in_one_job_is_refused(count: int) -> None:
    assert model(V4).translate(Portable(count=count), 0) == (
        {}, [("count", f"fal/seedream-v4 makes 1 to 6 images per job (num_images), not "
                       f"{count}")])


@pytest.mark.parametrize("model_id", [V4, V45])
def test_defaults_are_valid_and_say_everything_sent(model_id: str) -> None:
    spec = model(model_id)
    final = spec.with_defaults({})
    assert spec.check(final, 0) == []
    assert final["image_size"] == {"width": 2048, "height": 2048}
    assert final["sync_mode"] is False
    assert final["enable_safety_checker"] is True
    assert ("enhance_prompt_mode" in final) is (model_id == V4)


def test_outputs_are_num_images_times_max_images() -> None:
    assert model(V4).images_per_job({"num_images": 3, "max_images": 2}) == 6
    assert model(V45).images_per_job({}) == 1


def test_a_host_native_size_out_of_range_is_a_located_problem() -> None:
    spec = model(V45)
    problems = spec.check(spec.with_defaults({"image_size": {"width": 1024, "height": 1024}}), 0)
    assert [w for w, _ in problems] == ["params.image_size"]
    assert problems[0][1].startswith("fal/seedream-v4.5 cannot make 1024x1024")
    assert spec.check(spec.with_defaults({"image_size": "auto_4K"}), 0) == []
    assert spec.check(spec.with_defaults({"image_size": "auto"}), 0)  # a 4.0-only preset
    assert model(V4).check(model(V4).with_defaults({"image_size": "auto"}), 0) == []


def test_references_are_at_most_ten_and_with_max_images_at_most_fifteen() -> None:
    spec = model(V4)
    assert spec.check(spec.with_defaults({"max_images": 5}), 10) == []
    assert spec.check(spec.with_defaults({"max_images": 6}), 10) == [
        ("params.max_images", "fal/seedream-v4: reference images (10) + max_images (6) must "
                              "be ≤ 15")]
    assert spec.check(spec.with_defaults({}), 11) == [
        ("images", "fal/seedream-v4 takes at most 10 reference images (11 given)")]


def test_sync_mode_true_is_refused_and_unknown_parameters_are_named() -> None:
    spec = model(V4)
    assert [w for w, _ in spec.check(spec.with_defaults({"sync_mode": True}), 0)] == [
        "params.sync_mode"]
    problems = spec.check(spec.with_defaults({"image_urls": ["https://x.test/a.png"]}), 0)
    assert problems[0][0] == "params.image_urls"
    assert "has no parameter 'image_urls'" in problems[0][1]
    v45 = model(V45)
    assert v45.check(v45.with_defaults({"enhance_prompt_mode": "fast"}), 0)[0][0] == \
        "params.enhance_prompt_mode"
