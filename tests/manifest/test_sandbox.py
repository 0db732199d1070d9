"""Templates run sandboxed: no Python internals, no mutation, no unbounded allocation."""

from __future__ import annotations

import pytest

from runner.manifest.templates import ENV, TemplateFailure, compile_template

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ model.__class__.__base__.__subclasses__() }}",
    "{{ (model|attr('__class__')) }}",
    "{{ model.items.__self__.__class__ }}",
    "{{ '{0.__class__}'.format(model) }}",
    "{% set x = model.update({'id': 'evil'}) %}{{ model.id }}",
    "{{ [].append(1) }}",
    "{{ 'a' * 100000000 }}",
    "{{ 2 ** 100000 }}",
    "{{ '%0999999d' % 1 }}",
    "{{ '{:>999999}'.format(1) }}",
    "{{ [1, 2] | random }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_manifest_cannot_reach_python_internals(only, source: str) -> None:
    err = only("version: 1\njobs:\n  - name: x\n    model: wiro/seedream-v4\n"
               f"    prompt: \"{source}\"\n")
    assert (err.line, err.col, err.path) == (5, 13, "$.jobs[0].prompt")
    text = str(err)
    for leak in ("<class", "object at 0x", "<module", "__builtins__", "<function"):
        assert leak not in text


def test_security_messages_say_what_was_refused(only) -> None:
    err = only("version: 1\njobs: [{model: wiro/seedream-v4, prompt: \"{{ model.__class__ }}\"}]\n")
    assert err.message.startswith("unsafe template: access to attribute '__class__'")


def test_sandbox_globals_are_minimal() -> None:
    assert set(ENV.globals) == {"range", "dict"}
    assert "random" not in ENV.filters
    assert "slug" in ENV.filters


def test_ordinary_template_features_still_work(plan_of) -> None:
    plan = plan_of("""\
        version: 1
        vars: {colors: [red, green], spec: {w: 3, h: 4}}
        jobs:
          - name: x
            model: wiro/seedream-v4
            prompt: >-
              {% for c in colors %}{{ c | upper }}{% if not loop.last %}+{% endif %}{% endfor %}
              {{ spec.w * spec.h }} {{ '%03d' % 7 }} {{ 'a-{}'.format(1) }}
              {{ "Golden Hour!" | slug }} {{ range(3) | list | length }}
              {{ (colors | join(',')) | replace('red', 'RED') }}
    """)
    assert plan.jobs[0].prompt == "RED+GREEN 12 007 a-1 golden-hour 3 RED,green"


def test_undefined_is_strict() -> None:
    t = compile_template("{{ missing }} text")
    with pytest.raises(TemplateFailure, match="undefined variable 'missing'"):
        t.render({})
    assert compile_template("{{ x | default('d') }}").render({}) == "d"
    assert compile_template("{% if x is defined %}y{% else %}n{% endif %}").render({}) == "n"


def test_fast_path_renders_exactly_like_jinja() -> None:
    sources = ["{{ a }}-{{ b }}", "{{ m.alias | slug }}/{{ i }}", "x{{ a | upper }}y",
               "{{ a | trim | lower }}", "{{ b }}{{ n }}{{ f }}{{ t }}{{ l }}"]
    ctx = {"a": " Hello Wörld ", "b": None, "m": {"alias": "V 4.5"}, "i": 3, "n": 1.0,
           "f": False, "t": True, "l": [1, "x"]}
    for source in sources:
        t = compile_template(source)
        assert t._fast is not None, source
        assert t.render(ctx) == ENV.from_string(source).render(ctx), source


def test_deeply_nested_template_is_a_located_error(only) -> None:
    deep = "(" * 3000 + "1" + ")" * 3000
    err = only("version: 1\njobs:\n  - name: x\n    model: wiro/seedream-v4\n"
               f"    prompt: \"{{{{ {deep} }}}}\"\n")
    assert (err.line, err.col) == (5, 13)
    assert "nested too deeply" in err.message
