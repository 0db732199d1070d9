"""Expansion: order, context, typed parameters, prices, estimates and the plan's extras."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import ManifestError
from runner.jobs import Budget, Limits, Price
from runner.manifest import plan_document, summarize
from runner.manifest.plan import plan_job_texts


def test_order_is_entries_then_models_then_combinations_then_repeat(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        matrix: {p: [a, b]}
        models: {x: {model: wiro/seedream-v4}, y: {model: wiro/seedream-v3}}
        jobs:
          - name: "{{ p }}-{{ model.alias }}-{{ index }}"
            model: [y, x]
            prompt: "{{ p }}"
            repeat: 2
          - name: last
            model: x
            matrix: {}
            prompt: z
    """)
    assert [j.name for j in plan.jobs] == [
        "a-y-0", "a-y-1", "b-y-0", "b-y-1", "a-x-0", "a-x-1", "b-x-0", "b-x-1", "last"]
    assert [j.line for j in plan.jobs] == [5] * 8 + [9]
    assert [j.index for j in plan.jobs[:2]] == [0, 1]
    assert plan.jobs[0].axes == {"p": "a"}


def test_template_context(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        vars: {brand: Acme, n: 3}
        matrix: {product: [tent]}
        models: {v4: {model: wiro/seedream-v4}}
        prompts:
          base: "{{ brand }} {{ product }}"
          hero: "{{ prompts.base }} by {{ model.alias }}/{{ model.id }}/{{ model.provider }}"
        jobs:
          - name: "{{ product }}-{{ index }}"
            model: v4
            prompt: "{{ prompts.hero }} #{{ index }} of {{ n }}"
            repeat: 2
    """)
    assert [j.prompt for j in plan.jobs] == [
        "Acme tent by v4/wiro/seedream-v4/wiro #0 of 3",
        "Acme tent by v4/wiro/seedream-v4/wiro #1 of 3"]


def test_matrix_values_win_over_vars_and_can_be_mappings(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        vars: {light: noon}
        matrix:
          light: [dusk]
          cam: [{lens: 35mm, iso: 100}]
        jobs:
          - name: x
            model: wiro/seedream-v4
            prompt: "{{ light }} {{ cam.lens }} iso {{ cam.iso }}"
    """)
    assert plan.jobs[0].prompt == "dusk 35mm iso 100"


def test_typed_parameters_after_rendering(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        vars: {base_seed: 40, scale: 2.5, big: 2560}
        matrix: {w: [2560], label: ["2048"]}
        models:
          v3:
            model: wiro/seedream-v3
            params: {seed: "{{ base_seed + index }}", guidanceScale: "{{ scale }}"}
          v45:
            model: wiro/seedream-v4-5
            params: {width: "{{ w }}", height: 1440, watermark: "{{ index > 0 }}"}
          v4:
            model: wiro/seedream-v4
            params: {size: "{{ label }}x{{ label }}"}
        jobs:
          - name: "{{ model.alias }}-{{ index }}"
            model: [v3, v45, v4]
            prompt: x
            repeat: 2
    """)
    by_name = {j.name: dict(j.params) for j in plan.jobs}
    assert by_name["v3-0"]["seed"] == 40
    assert by_name["v3-1"]["seed"] == 41
    assert isinstance(by_name["v3-1"]["seed"], int)
    assert by_name["v3-0"]["guidanceScale"] == 2.5
    assert by_name["v45-0"]["width"] == 2560
    assert by_name["v45-0"]["watermark"] is False
    assert by_name["v45-1"]["watermark"] is True
    assert by_name["v4-0"]["size"] == "2048x2048"  # text around expressions: a string


def test_a_string_expression_stays_a_string(only, plan_of) -> None:
    text = ("version: 1\nvars: {w: '2560'}\njobs:\n  - name: x\n"
            "    model: wiro/seedream-v4-5\n    prompt: p\n"
            "    params: {width: \"{{ w }}\", height: 1440}\n")
    err = only(text)
    assert (err.line, err.path) == (7, "$.jobs[0].params.width")
    assert "'2560' is not of type 'integer'" in err.message
    # the documented fix: convert explicitly
    plan = plan_of(text.replace("{{ w }}", "{{ w | int }}"))
    assert plan.jobs[0].params["width"] == 2560


def test_params_precedence_defaults_then_alias_then_job(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        models:
          v45: {model: wiro/seedream-v4-5, params: {width: 2560, height: 1440, maxImages: 3}}
        jobs:
          - {name: a, model: v45, prompt: x}
          - {name: b, model: v45, prompt: x, params: {maxImages: 1, watermark: true}}
    """)
    a, b = plan.jobs
    assert dict(a.params) == {"width": 2560, "height": 1440, "maxImages": 3, "watermark": False}
    assert dict(b.params) == {"width": 2560, "height": 1440, "maxImages": 1, "watermark": True}


def test_constant_strings_are_kept_exactly(plan_of) -> None:
    plan = plan_of("version: 1\njobs:\n  - name: x\n    model: wiro/seedream-v4\n"
                   "    prompt: |\n      two lines\n      here\n")
    assert plan.jobs[0].prompt == "two lines\nhere\n"


def test_price_override_and_estimates(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        models:
          v45: {model: wiro/seedream-v4-5, params: {width: 2560, height: 1440, maxImages: 3}}
          cheap: {model: wiro/seedream-v4, price: {usd_per_image: 0.01}}
          pix: {model: pixwith/seedream-4.5, params: {num_outputs: 2}}
          pix_usd: {model: pixwith/seedream-4.5, price: {usd_per_image: 0.05}}
        jobs:
          - name: "{{ model.alias }}"
            model: [v45, cheap, pix, pix_usd]
            prompt: x
    """)
    v45, cheap, pix, pix_usd = plan.jobs
    # an alias's price replaces the list price as a whole: no credits counted here
    assert pix_usd.price == Price(usd_per_image=0.05)
    assert (pix_usd.estimate.usd, pix_usd.estimate.credits) == (pytest.approx(0.05), 0)
    assert v45.price == Price(usd_per_image=0.04)
    assert (v45.estimate.images, v45.estimate.usd) == (3, pytest.approx(0.12))
    assert cheap.price == Price(usd_per_image=0.01)
    assert cheap.estimate.usd == pytest.approx(0.01)
    assert pix.price == Price(credits_per_image=6)
    assert (pix.estimate.images, pix.estimate.credits, pix.estimate.usd) == (2, 12, 0)
    rows = summarize(plan.jobs)
    assert [(r.model, r.aliases, r.jobs, r.images) for r in rows] == [
        ("wiro/seedream-v4-5", ("v45",), 1, 3), ("wiro/seedream-v4", ("cheap",), 1, 1),
        ("pixwith/seedream-4.5", ("pix", "pix_usd"), 2, 3)]
    total = plan.estimate()
    assert (total.images, total.usd, total.credits) == (7, pytest.approx(0.18), 12)


def test_default_job_names(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        matrix: {light: [Golden Hour]}
        jobs:
          - {model: [wiro/seedream-v4, wiro/seedream-v3], prompt: x, repeat: 2}
    """)
    assert [j.name for j in plan.jobs] == [
        "job1-golden-hour-wiro-seedream-v4-0", "job1-golden-hour-wiro-seedream-v4-1",
        "job1-golden-hour-wiro-seedream-v3-0", "job1-golden-hour-wiro-seedream-v3-1"]


def test_templated_image_paths_follow_the_matrix(plan_of, image) -> None:
    image("refs/tent.png", (1, 2, 3))
    image("refs/boots.png", (4, 5, 6))
    plan = plan_of("version: 1\nmatrix: {p: [tent, boots]}\njobs:\n  - name: \"{{ p }}\"\n"
                   "    model: wiro/seedream-v4\n    images: [\"refs/{{ p }}.png\"]\n"
                   "    prompt: x\n")
    assert [j.images[0].ref for j in plan.jobs] == ["refs/tent.png", "refs/boots.png"]
    assert plan.jobs[0].images[0].sha256 != plan.jobs[1].images[0].sha256


def test_templated_image_path_that_is_missing_for_one_combination(only, image) -> None:
    image("refs/tent.png")
    err = only("version: 1\nmatrix: {p: [tent, boots]}\njobs:\n  - name: \"{{ p }}\"\n"
               "    model: wiro/seedream-v4\n    images: [\"refs/{{ p }}.png\"]\n"
               "    prompt: x\n")
    assert (err.line, err.col, err.path) == (6, 14, "$.jobs[0].images[0]")
    assert "no such file 'refs/boots.png'" in err.message
    assert "p=boots" in err.message


def test_plan_carries_limits_budget_providers_and_bytes(plan_of) -> None:
    text = """\
        version: 1
        name: my-run
        jobs: [{name: x, model: wiro/seedream-v4, prompt: y}]
        limits:
          wiro: {concurrency: 3, requests_per_minute: 90}
        budget: {max_usd: 2.5}
        providers:
          pixwith: {base_url: "http://127.0.0.1:9000/api"}
    """
    plan = plan_of(text)
    assert plan.name == "my-run"
    assert plan.limits["wiro"] == Limits(3, 90)
    assert plan.limits["pixwith"] == Limits()
    assert plan.budget == Budget(max_usd=2.5)
    assert plan.providers == {"pixwith": {"base_url": "http://127.0.0.1:9000/api"}}
    assert plan.manifest_path.is_absolute()
    assert plan.manifest_bytes == plan.manifest_path.read_bytes()


def test_name_defaults_to_the_file_name(plan_of) -> None:
    plan = plan_of("version: 1\njobs: [{model: wiro/seedream-v4, prompt: y}]\n",
                   "My Sweep_v2.yaml")
    assert plan.name == "my-sweep-v2"


def test_output_namer(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        vars: {root: shots}
        matrix: {p: [tent]}
        prompts: {hero: "a {{ p }}"}
        jobs: [{name: x, model: wiro/seedream-v4, prompt: "{{ prompts.hero }}"}]
        output:
          filename: >-
            {{ root }}/{{ p }}/{{ model.alias | slug }}-{{ job.name }}-{{ index }}-{{
            job.key[:8] }}-{{ prompts.hero | slug }}-{{ image.index }}.{{ image.ext }}
    """)
    job = plan.jobs[0]
    assert plan.output_name(job, 2, "jpeg") == (
        f"shots/tent/wiro-seedream-v4-x-0-{job.key[:8]}-a-tent-2.jpeg")


def test_output_namer_refuses_an_escape_at_run_time(plan_of) -> None:
    plan = plan_of("version: 1\njobs: [{name: x, model: wiro/seedream-v4, prompt: y}]\n"
                   "output: {filename: \"{{ job.name }}/{{ image.ext }}\"}\n")
    with pytest.raises(ManifestError, match=r"'\.\.' segment") as info:
        plan.output_name(plan.jobs[0], 0, "..")
    assert info.value.path == "$.output.filename"
    assert info.value.line == 3


def test_plan_document_shape(plan_of) -> None:
    plan = plan_of("version: 1\njobs: [{name: x, model: pixwith/seedream-4.5, prompt: y}]\n"
                   "budget: {max_credits: 5}\n")
    doc = plan_document(plan)
    (job,) = doc["jobs"]
    assert {"key", "name", "provider", "model", "prompt", "params", "images"} <= set(job)
    assert job["output"] == "x/0.png"
    assert "status" not in job
    assert doc["estimate"]["credits"] == 6
    assert doc["estimate"]["within_budget"] is False
    assert doc["estimate"]["by_model"][0]["model"] == "pixwith/seedream-4.5"
    with_status = plan_document(plan, status={job["key"]: "cached"})
    assert with_status["jobs"][0]["status"] == "cached"


def test_plan_job_texts_are_the_documents_jobs_as_json_dumps_writes_them(plan_of,
                                                                      image) -> None:
    image("refs/tent.png", (1, 2, 3))
    image("refs/böots.png", (4, 5, 6))
    plan = plan_of("""\
version: 1
vars: {brand: "Ünïcode \\"quoted\\""}
models:
  v4: {model: wiro/seedream-v4, params: {size: 1024x1024}}
  pix: {model: pixwith/seedream-4.5}
jobs:
  - name: "{{ p }}-{{ n }}-{{ model.alias }}-{{ index }}"
    model: [v4, pix]
    matrix: {p: [tent, böots], n: [1, 2.5, true, null]}
    images: ["refs/{{ p }}.png", "https://example.com/a.png"]
    prompt: "{{ brand }} {{ p }}\\t→ {{ n }}"
    repeat: 2
  - name: solo
    model: v4
    prompt: plain
""")
    assert len(plan.jobs) == 2 * 4 * 2 * 2 + 1
    keys = [job.key for job in plan.jobs]
    status = {k: ("cached" if i % 3 else "changed") for i, k in enumerate(keys[:-1])}
    for given in (None, status):
        expected = [json.dumps(d, ensure_ascii=False)
                    for d in plan_document(plan, given)["jobs"]]
        assert list(plan_job_texts(plan, given)) == expected
    more = {k: {"status_reason": f"why {i} ✓", "from_store": i % 2 == 0}
            for i, k in enumerate(keys)}
    expected = [json.dumps({**d, **more[d["key"]]}, ensure_ascii=False)
                for d in plan_document(plan, status)["jobs"]]
    assert list(plan_job_texts(plan, status, lambda job: more[job.key])) == expected
    assert plan_document(plan, with_jobs=False)["jobs"] == []


def test_load_manifest_and_load_plan_raise_every_problem(tmp_path: Path) -> None:
    import runner
    from runner.errors import ManifestErrors

    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nfoo: 1\njobs: [{model: nope, prompt: x}]\n")
    for load in (runner.load_manifest, runner.load_plan):
        with pytest.raises(ManifestErrors) as info:
            load(path)
        assert [p.line for p in info.value.problems] == [2, 3]


def test_flat_keys_tell_apart_what_json_tells_apart() -> None:
    from runner.manifest.plan import _flat_key

    distinct = [{"a": 1}, {"a": True}, {"a": 1.0}, {"a": 0.0}, {"a": -0.0}, {"a": "1"},
                {"a": None}, {"b": 1}, {"a": 1, "b": 2}, {"b": 2, "a": 1}]
    keys = [_flat_key(d) for d in distinct]
    assert None not in keys
    assert len(set(keys)) == len(distinct)
    assert _flat_key({"a": 1.5}) == _flat_key({"a": 1.5})
    assert _flat_key({"a": [1]}) is None
    assert _flat_key({"a": {"b": 1}}) is None
