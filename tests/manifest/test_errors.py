"""Every kind of manifest problem, reported at its exact line and column, all at once."""

from __future__ import annotations

import pytest

HEAD = """\
version: 1
models:
  v4: {model: wiro/seedream-v4}
  v45: {model: wiro/seedream-v4-5, params: {width: 2560, height: 1440}}
  v3: {model: wiro/seedream-v3}
jobs:
"""  # jobs start on line 7


def test_unknown_key_names_it_suggests_and_lists_allowed(only) -> None:
    err = only(HEAD + "  - model: v4\n    prompt: hi\n    parms: {maxImages: 2}\n")
    assert (err.line, err.col, err.path) == (9, 5, "$.jobs[0].parms")
    assert "unknown key 'parms'; did you mean 'params'?" in err.message
    assert ("allowed here: count, images, matrix, model, name, params, prompt, repeat, seed, "
            "size") in err.message
    assert str(err) == f"m.yaml:9:5: {err.message} (at $.jobs[0].parms)"


def test_unknown_top_level_key(only) -> None:
    err = only("version: 1\nmodle: {}\njobs: [{model: wiro/seedream-v4, prompt: x}]\n")
    assert (err.line, err.col, err.path) == (2, 1, "$.modle")
    assert "did you mean 'models'?" in err.message


def test_extension_keys_are_allowed_for_anchors(plan_of) -> None:
    plan = plan_of("version: 1\nx-common: &p hello\njobs: [{model: wiro/seedream-v4, "
                   "prompt: *p}]\n")
    assert plan.jobs[0].prompt == "hello"


def test_wrong_type_and_missing_required_key(problems) -> None:
    errors = problems(HEAD + "  - model: v4\n    repeat: two\n")
    assert [(e.line, e.col, e.path) for e in errors] == [(7, 5, "$.jobs[0]"),
                                                         (8, 13, "$.jobs[0].repeat")]
    assert "missing required key 'prompt'" in errors[0].message
    assert errors[1].message == "expected an integer, got a string ('two')"


def test_unsupported_version(only) -> None:
    err = only("version: 2\njobs: [{model: wiro/seedream-v4, prompt: x}]\n")
    assert (err.line, err.col) == (1, 10)
    assert "unsupported manifest version 2" in err.message


def test_unknown_model_id_in_alias(only) -> None:
    err = only("version: 1\nmodels:\n  v4: {model: wiro/seedream-v5}\n"
               "jobs: [{model: v4, prompt: x}]\n")
    assert (err.line, err.col, err.path) == (3, 15, "$.models.v4.model")
    assert "unknown model id 'wiro/seedream-v5'" in err.message
    assert "did you mean" in err.message


def test_unknown_alias_in_job(only) -> None:
    err = only(HEAD + "  - model: [v4, v45x]\n    prompt: hi\n")
    assert (err.line, err.col, err.path) == (7, 17, "$.jobs[0].model[1]")
    assert "unknown model alias or id 'v45x'; did you mean 'v45'?" in err.message


def test_model_id_without_alias_is_accepted(plan_of) -> None:
    plan = plan_of("version: 1\njobs: [{model: wiro/seedream-v3, prompt: x}]\n")
    assert plan.jobs[0].alias == "wiro/seedream-v3"
    assert plan.jobs[0].params["size"] == "1024x1024"


def test_unknown_image_set(only) -> None:
    err = only("version: 1\nimage_sets:\n  tent: [https://e.x/t.png]\n"
               "jobs:\n  - model: wiro/seedream-v4\n    prompt: hi\n    images: [tnet]\n")
    assert (err.line, err.col, err.path) == (7, 14, "$.jobs[0].images[0]")
    assert "unknown image set 'tnet'; did you mean 'tent'?" in err.message


def test_glob_matching_no_file(only) -> None:
    err = only("version: 1\nimage_sets:\n  s: [refs/*.jpg]\n"
               "jobs: [{model: wiro/seedream-v4, prompt: x, images: [s]}]\n")
    assert (err.line, err.col, err.path) == (3, 7, "$.image_sets.s[0]")
    assert "glob 'refs/*.jpg' matches no file" in err.message


def test_missing_folder_and_non_image_files(problems, tmp_path) -> None:
    (tmp_path / "refs").mkdir()
    (tmp_path / "notes.png").write_text("not really a png")
    errors = problems("version: 1\njobs:\n  - model: wiro/seedream-v4\n    prompt: hi\n"
                      "    images:\n      - refs/missing.png\n      - refs\n"
                      "      - notes.png\n")
    assert [(e.line, e.col) for e in errors] == [(6, 9), (7, 9), (8, 9)]
    assert "no such file 'refs/missing.png'" in errors[0].message
    assert "'refs' is a folder, not an image" in errors[1].message
    assert "'notes.png' is not a PNG, JPEG or WEBP image" in errors[2].message


def test_png_jpeg_and_webp_are_accepted(plan_of, image) -> None:
    image("a.png")
    image("b.jpg", fmt="JPEG")
    image("c.webp", fmt="WEBP")
    plan = plan_of("version: 1\njobs:\n  - model: wiro/seedream-v4\n    prompt: hi\n"
                   "    images: [a.png, b.jpg, c.webp, 'https://e.x/d.png']\n")
    refs = plan.jobs[0].images
    assert [r.ref for r in refs] == ["a.png", "b.jpg", "c.webp", "https://e.x/d.png"]
    assert all(len(r.sha256 or "") == 64 for r in refs[:3])
    assert refs[3].url == "https://e.x/d.png"


def test_bad_url_scheme(only) -> None:
    err = only("version: 1\njobs:\n  - model: wiro/seedream-v4\n    prompt: hi\n"
               "    images: ['ftp://e.x/a.png']\n")
    assert (err.line, err.col) == (5, 14)
    assert "only http:// and https://" in err.message


def test_undefined_template_variable_is_named(only) -> None:
    err = only("version: 1\nmatrix: {product: [tent]}\njobs:\n  - model: wiro/seedream-v4\n"
               "    prompt: \"a {{ produt }}\"\n")
    assert (err.line, err.col, err.path) == (5, 13, "$.jobs[0].prompt")
    assert err.message.startswith("undefined variable 'produt'; did you mean 'product'?")
    assert "[model wiro/seedream-v4, product=tent]" in err.message


def test_undefined_attribute_lists_what_exists(only) -> None:
    err = only("version: 1\njobs:\n  - model: wiro/seedream-v4\n"
               "    prompt: \"{{ model.aliass }}\"\n")
    assert "no key 'aliass' here (available: alias, id, provider)" in err.message


def test_template_syntax_error_line_within_a_block(only) -> None:
    err = only("version: 1\njobs:\n  - model: wiro/seedream-v4\n    prompt: |\n"
               "      line one\n      line two {% if %}\n      line three\n")
    assert (err.line, err.col, err.path) == (6, 7, "$.jobs[0].prompt")
    assert err.message.startswith("template syntax error")


def test_runtime_template_error_line_within_a_block(only) -> None:
    err = only("version: 1\njobs:\n  - model: wiro/seedream-v4\n    prompt: |\n"
               "      fine\n      {{ 1 // 0 }}\n")
    assert (err.line, err.col) == (6, 7)
    assert "ZeroDivisionError" in err.message


def test_errors_in_a_named_prompt_point_at_the_prompt(only) -> None:
    err = only("version: 1\nprompts:\n  hero: \"{{ nothing }}\"\n"
               "jobs: [{model: wiro/seedream-v4, prompt: \"{{ prompts.hero }}\"}]\n")
    assert (err.line, err.col, err.path) == (3, 9, "$.prompts.hero")


def test_unknown_and_later_prompts(problems) -> None:
    errors = problems("version: 1\nprompts:\n  a: \"{{ prompts.b }}\"\n  b: x\n"
                      "jobs: [{model: wiro/seedream-v4, prompt: \"{{ prompts.c }}\"}]\n")
    assert [(e.line, e.path) for e in errors] == [(3, "$.prompts.a"), (5, "$.jobs[0].prompt")]
    assert "not declared above it" in errors[0].message
    assert "unknown prompt 'c'" in errors[1].message


def test_duplicate_job_names_after_expansion(only) -> None:
    err = only("version: 1\nmatrix: {p: [a, b]}\njobs:\n  - name: same\n"
               "    model: wiro/seedream-v4\n    prompt: \"{{ p }}\"\n    repeat: 2\n")
    assert (err.line, err.col, err.path) == (4, 11, "$.jobs[0].name")
    assert "job name 'same' is used twice" in err.message
    assert "(and 2 more jobs)" in err.message


def test_duplicate_names_across_entries(only) -> None:
    err = only("version: 1\njobs:\n  - {name: x, model: wiro/seedream-v4, prompt: a}\n"
               "  - {name: x, model: wiro/seedream-v3, prompt: b}\n")
    assert (err.line, err.path) == (4, "$.jobs[1].name")
    assert "first by jobs[0], model wiro/seedream-v4" in err.message


def test_rendered_params_breaking_the_model_schema(only) -> None:
    err = only(HEAD + "  - name: big\n    model: v4\n    prompt: hi\n"
               "    params: {maxImages: \"{{ 20 + index }}\"}\n")
    assert (err.line, err.col, err.path) == (10, 25, "$.jobs[0].params.maxImages")
    assert "job 'big'" in err.message
    assert "20 is greater than the maximum of 15" in err.message


def test_alias_param_problem_points_at_the_alias(only) -> None:
    err = only("version: 1\nmodels:\n  v45: {model: wiro/seedream-v4-5, params: {width: 1024,"
               " height: 1024}}\njobs: [{name: small, model: v45, prompt: x}]\n")
    assert (err.line, err.path) == (3, "$.models.v45.params.width")
    assert "1,048,576 pixels" in err.message
    assert "job 'small'" in err.message


def test_unknown_parameter_name(only) -> None:
    err = only(HEAD + "  - model: v3\n    prompt: hi\n    params: {sead: 3}\n")
    assert (err.line, err.col) == (9, 20)
    assert "has no parameter 'sead'" in err.message


def test_too_many_reference_images(only, image) -> None:
    image("refs/a.png")
    err = only(HEAD + "  - name: t2i\n    model: v3\n    prompt: hi\n    images: [refs/a.png]\n")
    assert (err.line, err.col, err.path) == (10, 13, "$.jobs[0].images")
    assert "text-to-image only" in err.message

    urls = ", ".join(f"'https://e.x/{i}.png'" for i in range(5))
    err = only("version: 1\njobs:\n  - model: pixwith/seedream-4.5\n    prompt: hi\n"
               f"    images: [{urls}]\n")
    assert "at most 4 reference images (5 given)" in err.message


@pytest.mark.parametrize(("filename", "reason"), [
    ("/abs/{{ job.name }}.png", "absolute path"),
    ("../{{ job.name }}.png", "'..' segment"),
    ("a/../../{{ job.name }}.png", "'..' segment"),
    ("C:{{ job.name }}.png", "drive letter"),
    ("out\\\\{{ job.name }}.png", "backslash"),
    ("out//{{ job.name }}.png", "empty path segment"),
    ("{{ job.name }}/", "empty path segment"),
])
def test_output_names_that_would_escape(only, filename: str, reason: str) -> None:
    err = only(f"version: 1\njobs: [{{name: x, model: wiro/seedream-v4, prompt: a}}]\n"
               f"output:\n  filename: \"{filename}\"\n")
    assert (err.line, err.col, err.path) == (4, 13, "$.output.filename")
    assert "would escape or break the outputs folder" in err.message
    assert reason in err.message


def test_output_names_must_not_collide(only) -> None:
    err = only("version: 1\njobs: [{name: x, model: wiro/seedream-v4, prompt: a, repeat: 3,"
               " name: \"x{{ index }}\"}]\n")
    assert "duplicate key 'name'" in err.message  # (one problem: YAML first)
    err = only("version: 1\njobs: [{name: \"x{{ index }}\", model: wiro/seedream-v4, prompt: a,"
               " repeat: 3}]\noutput: {filename: \"all.png\"}\n")
    assert (err.line, err.path) == (3, "$.output.filename")
    assert "gives the same path 'all.png' to more than one job" in err.message


def test_several_images_need_image_index_in_the_output_name(only) -> None:
    err = only("version: 1\njobs: [{name: x, model: wiro/seedream-v4, prompt: a,"
               " params: {maxImages: 2}}]\noutput: {filename: \"{{ job.name }}.png\"}\n")
    assert "does not use {{ image.index }}" in err.message


def test_http_base_url_refused_except_loopback(problems) -> None:
    errors = problems("version: 1\njobs: [{model: wiro/seedream-v4, prompt: a}]\nproviders:\n"
                      "  wiro: {base_url: 'http://api.example.com'}\n"
                      "  pixwith: {base_url: 'http://127.0.0.1:8080/api'}\n")
    assert [(e.line, e.col) for e in errors] == [(4, 20)]
    assert "plain http:// is refused" in errors[0].message


def test_reserved_names(problems) -> None:
    errors = problems("version: 1\nvars: {model: x}\nmatrix: {index: [1]}\n"
                      "jobs: [{model: wiro/seedream-v4, prompt: a}]\n")
    assert [(e.line, e.col) for e in errors] == [(2, 8), (3, 10)]
    assert all("reserved name" in e.message for e in errors)


def test_exclude_key_not_an_axis(only) -> None:
    err = only("version: 1\nmatrix:\n  a: [1, 2]\n  exclude:\n    - {b: 1}\n"
               "jobs: [{model: wiro/seedream-v4, prompt: x}]\n")
    assert (err.line, err.col, err.path) == (5, 8, "$.matrix.exclude[0].b")
    assert "exclude key 'b' is not a matrix axis (axes: a)" in err.message


def test_matrix_that_excludes_everything(only) -> None:
    err = only("version: 1\nmatrix: {a: [1], exclude: [{a: 1}]}\n"
               "jobs: [{model: wiro/seedream-v4, prompt: x}]\n")
    assert "leaves no combination" in err.message
    assert err.line == 2


def test_bad_names_for_slug_and_template_keys(problems) -> None:
    errors = problems("version: 1\nname: My Run\nvars: {2fast: x}\n"
                      "jobs: [{model: wiro/seedream-v4, prompt: x}]\n")
    assert [(e.line, e.col) for e in errors] == [(2, 7), (3, 8)]
    assert "is not a slug" in errors[0].message
    assert "'my-run'" in errors[0].message
    assert "key '2fast' is not a usable name" in errors[1].message


def test_every_problem_is_reported_at_once(problems, image) -> None:
    errors = problems("""\
        version: 1
        modle: 1
        models:
          v4: {model: wiro/seedream-v9}
        image_sets:
          s: [nowhere/*.png]
        jobs:
          - model: v3x
            prompt: "{{ x }}"
          - name: a
            model: wiro/seedream-v4
            prompt: "{{ nothing }}"
        output: {filename: "../x"}
    """)
    assert [e.line for e in errors] == [2, 4, 6, 8, 12]
