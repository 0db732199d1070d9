"""Manifest templates are bounded: no statement meant for web pages, no runaway loop, no
value or output beyond its limit — each refused quickly, before the memory is taken."""

from __future__ import annotations

import time

import pytest

from runner.manifest.templates import (
    ENV,
    MAX_LOOP_STEPS,
    MAX_RENDERED,
    MAX_VALUE,
    TemplateFailure,
    compile_template,
)

CTX = {"x": "ab", "items": [1, 2, 3], "d": {"a": 1}, "n": 7}
BIG = "{% set s = 'x' * 100000 %}"  # the longest text one `*` may build


def render(source: str, ctx: dict | None = None) -> object:
    return compile_template(source).render(CTX if ctx is None else ctx)


def refused(source: str) -> str:
    started = time.perf_counter()
    with pytest.raises(TemplateFailure) as info:
        render(source)
    assert time.perf_counter() - started < 2, source
    return info.value.message


@pytest.mark.parametrize(("source", "word"), [
    ("{% macro m() %}x{% endmacro %}{{ m() }}", "{% macro %}"),
    ("{% call range(1) %}x{% endcall %}", "{% call %}"),
    ("{% import 'os' as os %}{{ x }}", "{% import %}"),
    ("{% from 'os' import system %}{{ x }}", "{% from … import %}"),
    ("{% include '/etc/passwd' %}", "{% include %}"),
    ("{% extends 'base' %}", "{% extends %}"),
    ("{% block b %}x{% endblock %}", "{% block %}"),
    ("{% set s %}{{ x }}{% endset %}{{ s }}", "a {% set %} block"),
    ("{% filter upper %}{{ x }}{% endfilter %}", "{% filter %}"),
    ("{% for i in items recursive %}{{ loop(i) }}{% endfor %}", "a recursive {% for %}"),
])
def test_page_composition_statements_are_refused_at_compile_time(source: str, word: str) -> None:
    with pytest.raises(TemplateFailure) as info:
        compile_template(source)
    assert info.value.message.startswith(f"template error: {word} is not available")


@pytest.mark.parametrize(("source", "fragment"), [
    # loops: the total over one render, however they nest
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     f"more than {MAX_LOOP_STEPS:,} loop iterations"),
    ("{% for i in range(400) %}{% for j in range(400) %}{{ '' }}{% endfor %}{% endfor %}",
     "loop iterations"),
    # values built by operators, before they exist
    ("{{ ['x' * 100000] * 100000 }}", "a repeated sequence larger than"),
    (BIG + "{% set t = s ~ s ~ s ~ s ~ s ~ s %}{{ [t] + [t] }}", "a sum larger than"),
    ("{% set s = 'x' * 100000 %}" + "{% set s = s ~ s %}" * 10 + "{{ s|length }}",
     "a text larger than"),
    (BIG + "{{ '%s%s%s%s%s%s%s%s%s%s%s' % (s, s, s, s, s, s, s, s, s, s, s) }}",
     "a formatted text larger than"),
    ("{{ '%0999999999d' % 1 }}", "width or precision"),
    # values built by methods and filters
    ("{{ ('x' * 100000) | replace('x', 'y' * 100000) }}", "a replaced text larger than"),
    ("{{ ('x' * 100000).replace('x', 'y' * 100000) }}", "a replaced text larger than"),
    (BIG + "{{ ([s] * 9) | join('x' * 20000) }}", "a joined text larger than"),
    (BIG + "{{ ('x' * 20000).join([s] * 9) }}", "a joined text larger than"),
    ("{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format('x' * 100000) }}", "a formatted text"),
    ("{{ '%0999999999d' | format(1) }}", "width or precision"),
    ("{{ 'x'.ljust(10**9) }}", "str.ljust with an argument of 1,000,000,000"),
    ("{{ 'x'.zfill(10**9) }}", "str.zfill with an argument"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "int.to_bytes with an argument"),
    ("{{ 'a\tb'.expandtabs(10**5) }}", "str.expandtabs is not available"),
    ("{{ range(10) | batch(10**9, 'x') | list }}", "the batch filter with an argument"),
    ("{{ range(10) | slice(10**9) | list }}", "the slice filter with an argument"),
    ("{{ [[1] * 10] * 10000 | sum(start=[]) }}", "the sum filter adds up numbers only"),
    ("{{ dict.fromkeys(range(100000), 'x' * 100000) }}", "the result of fromkeys() larger than"),
    # sets and withs are measured too (shared parts count every time they appear)
    ("{% set a = ['x' * 100000] * 5 %}{% set b = [a, a] %}{% set c = [b, b] %}{{ c|length }}",
     "larger than"),
])
def test_resource_bombs_are_refused_quickly(source: str, fragment: str) -> None:
    message = refused(source)
    assert message.startswith("unsafe template: "), message
    assert fragment in message, message


def test_output_stops_at_the_limit_before_it_is_all_built() -> None:
    message = refused("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}")
    assert message == f"renders to more than {MAX_RENDERED:,} characters"


def test_ordinary_templates_still_render() -> None:
    assert render("{% for i in items %}{{ loop.index }}{% if not loop.last %},{% endif %}"
                  "{% endfor %}") == "1,2,3"
    assert render("{{ x ~ '-' ~ n }} {{ '%03d' % n }} {{ 'a-{}'.format(n) }}") == "ab-7 007 a-7"
    assert render("{{ items | join('+') }} {{ items | sum }} {{ x | replace('a', 'zz') }}") == \
        "1+2+3 6 zzb"
    assert render("{% set y = x * 3 %}{% with z = [y, y] %}{{ z | join }}{% endwith %}") == \
        "abababababab"
    assert render("{{ range(5) | map('string') | join('-') }} {{ d.items() | list }}") == \
        "0-1-2-3-4 [('a', 1)]"
    assert render("{{ x.ljust(5, '.') }}|{{ x.upper() }}|{{ x.split('a') }}") == \
        "ab...|AB|['', 'b']"
    # the loop budget is per render: the same template renders again and again
    t = compile_template("{% for i in range(60000) %}{% endfor %}{{ x }}")
    for _ in range(3):
        assert t.render(CTX) == "ab"


def test_values_up_to_the_limit_are_fine() -> None:
    assert render(BIG + "{{ (s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s) | length }}") == "900000"
    assert render("{{ (range(100000) | list) | length }}") == "100000"
    assert MAX_VALUE == 1_000_000


def test_jinja_used_directly_keeps_the_limits() -> None:
    with pytest.raises(Exception, match="loop iterations"):
        ENV.from_string("{% for i in range(100000) %}{% for j in range(2) %}{% endfor %}"
                        "{% endfor %}").render()
