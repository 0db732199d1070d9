"""The BytePlus models' parameters, cross-field rules and portable settings: exact
parameters out, exact refusals."""

from __future__ import annotations

from runner.hosts.byteplus import MODELS, SPEC, outputs_asked
from runner.spec import Portable
from runner.testing import check_models

M40, M45 = MODELS


def test_the_models_defaults_are_valid_and_say_what_is_sent() -> None:
    assert check_models(SPEC) == ("byteplus/seedream-4-0", "byteplus/seedream-4-5")
    assert M40.with_defaults({}) == {
        "model": "seedream-4-0-250828", "size": "2048x2048",
        "sequential_image_generation": "disabled", "stream": False, "response_format": "url",
        "watermark": False}
    assert M45.with_defaults({})["model"] == "seedream-4-5-251128"
    assert M40.price.usd_per_image == 0.03
    assert M45.price.usd_per_image == 0.04


def test_an_endpoint_id_may_replace_the_model_id() -> None:
    assert M40.check(M40.with_defaults({"model": "ep-20250101-abcde"}), 0) == []
    [(where, message)] = M40.check(M40.with_defaults({"model": "gpt-image-1"}), 0)
    assert where == "params.model"
    assert "does not match" in message


def test_sizes_follow_each_models_pixel_range_and_named_sizes() -> None:
    assert M40.check(M40.with_defaults({"size": "1K"}), 0) == []
    assert M40.check(M40.with_defaults({"size": "1280x720"}), 0) == []  # 921,600 exactly
    [(where, _)] = M45.check(M45.with_defaults({"size": "1K"}), 0)
    assert where == "params.size"
    [(where, message)] = M45.check(M45.with_defaults({"size": "1280x720"}), 0)
    assert where == "params.size"
    assert message.startswith("byteplus/seedream-4-5 cannot make 1280x720: width × height "
                              "must be 3,686,400–16,777,216 pixels; nearest: ")
    [(_, message)] = M40.check(M40.with_defaults({"size": "8000x400"}), 0)
    assert "aspect ratio must be between 1:16 and 16:1" in message


def test_reference_images_and_outputs_stay_within_fifteen() -> None:
    auto = {"sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 4}}
    assert M45.check(M45.with_defaults(auto), 11) == []
    [(where, message)] = M45.check(M45.with_defaults(auto), 12)
    assert where == "params.sequential_image_generation_options.max_images"
    assert "reference images (12) + max_images (4) must be ≤ 15; set max_images to at most 3" \
        in message
    [(where, _)] = M45.check(M45.with_defaults({"sequential_image_generation_options":
                                                {"max_images": 2}}), 0)
    assert where == "params.sequential_image_generation_options.max_images"
    problems = M45.check(M45.with_defaults({}), 15)
    assert [where for where, _ in problems] == [
        "images", "params.sequential_image_generation_options.max_images"]
    assert "takes at most 14 reference images (15 given)" in problems[0][1]


def test_estimates_count_the_images_a_set_may_hold() -> None:
    assert M40.images_per_job(M40.with_defaults({})) == 1
    assert M40.images_per_job({"sequential_image_generation": "auto"}) == 15  # BytePlus default
    assert outputs_asked({"sequential_image_generation": "auto",
                          "sequential_image_generation_options": {"max_images": 3}}) == 3


def test_portable_size_and_count_become_the_hosts_own_parameters() -> None:
    assert M45.translate(Portable(size=(2560, 1440), count=1), 0) == (
        {"size": "2560x1440", "sequential_image_generation": "disabled"}, [])
    assert M40.translate(Portable(count=4), 2) == (
        {"sequential_image_generation": "auto",
         "sequential_image_generation_options": {"max_images": 4}}, [])


def test_portable_settings_it_cannot_honour_are_refused_with_what_it_can_do() -> None:
    params, problems = M45.translate(Portable(size=(1024, 1024)), 0)
    assert params == {}
    assert problems == [("size", "byteplus/seedream-4-5 cannot make 1024x1024: width × height "
                         "must be 3,686,400–16,777,216 pixels; nearest: 1920x1920")]
    _, problems = M40.translate(Portable(count=14), 2)
    assert problems == [("count", "byteplus/seedream-4-0 makes 1 to 13 images per job with 2 "
                         "reference images (reference images + images ≤ 15); 14 asked")]
    _, problems = M40.translate(Portable(seed=7), 0)
    assert problems == [("seed", "byteplus/seedream-4-0 has no portable 'seed' setting (it "
                         "supports: size, count); set its own parameter under params: instead")]
