"""The Jinja internals runner/manifest/templates.py relies on are still there, unchanged.

templates.py bounds what a manifest template may cost by overriding methods of Jinja's
sandbox, some of them private (``Environment._generate``, ``Undefined._undefined_message``),
by calling private ones (``Undefined._fail_with_undefined_error``) and by knowing internal
names (the ``_loop_vars``/``_block_vars`` keywords generated code passes to calls,
``jinja_pass_arg``, ``wrap_str_format``, ``str_join``, ``missing``). A Jinja release may
rename or reshape any of them without notice; an override that no longer matches is then
silently never called, and a limit silently stops applying. pyproject.toml pins Jinja2 below
the next minor version for that reason; these tests are what to run before moving the pin.
Every failure names what changed and says templates.py must be reviewed.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import Environment, StrictUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from runner.manifest import templates
from runner.manifest.templates import ENV, ManifestEnvironment, compile_template

TEMPLATES_PY = Path(templates.__file__)


def review(what: str, problem: str) -> str:
    return (f"Jinja2 {jinja2.__version__}: {what} {problem}. runner/manifest/templates.py "
            f"overrides or calls it: review templates.py (the manifest sandbox and its "
            f"resource limits depend on it) before allowing this Jinja version.")


# The signatures templates.py was written against (annotations left out).
EXPECTED: list[tuple[str, Callable[[], Any], str]] = [
    # private: overridden (ManifestEnvironment._generate runs the _Limiter on every template)
    ("Environment._generate", lambda: Environment._generate,
     "(self, source, name, filename, defer_init=False)"),
    # private: called by ManifestEnvironment.getattr/getitem on a StrictUndefined
    ("Undefined._fail_with_undefined_error", lambda: Undefined._fail_with_undefined_error,
     "(self, *args, **kwargs)"),
    # sets the private _undefined_hint/_obj/_name that _Undefined._undefined_message reads
    ("Undefined.__init__", lambda: Undefined.__init__,
     "(self, hint=None, obj=missing, name=None, "
     "exc=<class 'jinja2.exceptions.UndefinedError'>)"),
    # internal, since 3.1.5: overridden to bound str.format
    ("SandboxedEnvironment.wrap_str_format", lambda: SandboxedEnvironment.wrap_str_format,
     "(self, value)"),
    # internal: imported and called by `~`
    ("jinja2.runtime.str_join", lambda: str_join, "(seq)"),
    # the sandbox's hooks that ManifestEnvironment overrides, and what its overrides call
    ("SandboxedEnvironment.call", lambda: SandboxedEnvironment.call,
     "(_SandboxedEnvironment__self, _SandboxedEnvironment__context, "
     "_SandboxedEnvironment__obj, *args, **kwargs)"),
    ("SandboxedEnvironment.call_binop", lambda: SandboxedEnvironment.call_binop,
     "(self, context, operator, left, right)"),
    ("SandboxedEnvironment.getattr", lambda: SandboxedEnvironment.getattr,
     "(self, obj, attribute)"),
    ("SandboxedEnvironment.getitem", lambda: SandboxedEnvironment.getitem,
     "(self, obj, argument)"),
    ("Context.call", lambda: Context.call, "(_Context__self, _Context__obj, *args, **kwargs)"),
    ("nodes.Node.set_environment", lambda: nodes.Node.set_environment,
     "(self, environment)"),
    ("Environment.compile_expression", lambda: Environment.compile_expression,
     "(self, source, undefined_to_none=True)"),
]


def _unannotated(func: Callable[..., Any]) -> str:
    sig = inspect.signature(func)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize(("what", "get", "expected"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_signature_is_the_one_templates_py_expects(what: str, get: Callable[[], Any],
                                                   expected: str) -> None:
    try:
        found = get()
    except AttributeError as exc:
        pytest.fail(review(what, f"no longer exists ({exc})"))
    assert _unannotated(found) == expected, review(
        what, f"changed signature: templates.py expects {expected}, Jinja has "
              f"{_unannotated(found)}")


def test_undefined_message_is_a_property_jinja_still_reads() -> None:
    static = inspect.getattr_static(Undefined, "_undefined_message", None)
    assert isinstance(static, property), review(
        "Undefined._undefined_message", "is no longer a property (templates._Undefined "
        "overrides it as one)")
    # Jinja must still build its UndefinedError from it: our message, not Jinja's own.
    with pytest.raises(UndefinedError, match="undefined variable 'nope'") as info:
        ENV.from_string("{{ nope }}").render()
    assert "is undefined" not in str(info.value), review(
        "Undefined._undefined_message", "is no longer what UndefinedError is raised with")


def test_undefined_keeps_its_private_attributes() -> None:
    undef = StrictUndefined(hint="h", obj={"a": 1}, name="n")
    for name in ("_undefined_hint", "_undefined_obj", "_undefined_name"):
        assert hasattr(undef, name), review(f"Undefined.{name}", "no longer exists")
    assert (undef._undefined_hint, undef._undefined_obj, undef._undefined_name) == \
        ("h", {"a": 1}, "n"), review("Undefined._undefined_hint/_obj/_name",
                                     "no longer hold what __init__ was given")
    assert StrictUndefined(name="n")._undefined_obj is missing, review(
        "jinja2.utils.missing", "is no longer the default _undefined_obj of an Undefined "
        "(templates._Undefined tells an undefined variable by it)")


def test_the_call_plumbing_keywords_are_the_ones_templates_py_filters_out() -> None:
    # Generated code passes these along with a call inside a loop or a block; ManifestEnvironment
    # .call leaves them out of the size of the arguments (templates._CALL_PLUMBING).
    assert templates._CALL_PLUMBING == ("_loop_vars", "_block_vars")
    plain = Environment()
    in_loop = plain.compile("{% for i in [1] %}{{ f(i) }}{% endfor %}", raw=True)
    in_block = plain.compile("{% block b %}{{ f(1) }}{% endblock %}", raw=True)
    assert "_loop_vars=_loop_vars" in in_loop, review(
        "the _loop_vars keyword of generated calls", "is no longer passed")
    assert "_block_vars=_block_vars" in in_block, review(
        "the _block_vars keyword of generated calls", "is no longer passed")
    seen: list[dict[str, Any]] = []

    class Spy(ManifestEnvironment):
        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(dict(kwargs))
            return super().call(__context, __obj, *args, **kwargs)

    Spy().from_string("{% for i in [1] %}{{ f(i) }}{% endfor %}").render(f=lambda i: i)
    keywords = set().union(*seen)
    assert keywords == {"_loop_vars"}, review(
        "SandboxedEnvironment.call", f"receives other keywords from a call in a loop: "
                                     f"{sorted(keywords)} (expected only _loop_vars)")


def test_filters_that_take_a_context_still_say_so() -> None:
    # templates._filter_check skips the first argument of a filter marked this way.
    for decorate in (jinja2.pass_context, jinja2.pass_eval_context, jinja2.pass_environment):
        marked = decorate(lambda first, value: value)
        assert getattr(marked, "jinja_pass_arg", None) is not None, review(
            f"jinja2.{decorate.__name__}", "no longer sets jinja_pass_arg")
    assert getattr(Environment().filters["map"], "jinja_pass_arg", None) is not None, review(
        "the map filter's jinja_pass_arg", "is gone")
    assert ENV.from_string("{{ [1, 2] | map('string') | join('-') }}").render() == "1-2"


def test_jinja_still_asks_wrap_str_format_for_str_format() -> None:
    # Since Jinja 3.1.5 the sandbox wraps str.format when it is looked up; templates.py
    # bounds the result there. Below 3.1.5 nothing calls the override.
    bound = ENV.getattr("{:>123456}", "format")
    refused = ""
    try:
        bound(1)
    except SecurityError as exc:
        refused = str(exc)
    assert "width or precision" in refused, review(
        "SandboxedEnvironment.wrap_str_format", "is no longer asked by getattr")
    failure = ""
    try:
        compile_template("{{ '{:>123456}'.format(x) }}").render({"x": 1})
    except templates.TemplateFailure as exc:
        failure = exc.message
    assert "width or precision" in failure, review(
        "SandboxedEnvironment.wrap_str_format", "is no longer called for str.format")


def test_the_node_fields_templates_py_builds_and_rewrites() -> None:
    # _Limiter builds nodes.Call and nodes.EnvironmentAttribute positionally and rewrites
    # For.iter, Assign.node, With.values and Concat.nodes.
    expected = {
        nodes.Call: ("node", "args", "kwargs", "dyn_args", "dyn_kwargs"),
        nodes.EnvironmentAttribute: ("name",),
    }
    for cls, fields in expected.items():
        assert cls.fields == fields, review(f"nodes.{cls.__name__}.fields",
                                            f"changed: {cls.fields}, expected {fields}")
    for cls, name in ((nodes.For, "iter"), (nodes.For, "recursive"), (nodes.Assign, "node"),
                      (nodes.With, "values"), (nodes.Concat, "nodes")):
        assert name in cls.fields, review(f"nodes.{cls.__name__}.{name}", "no longer exists")


def _private_names_used() -> set[str]:
    """Private names templates.py reads, calls or overrides, minus its own."""
    tree = ast.parse(TEMPLATES_PY.read_text(encoding="utf-8"))
    own: set[str] = set()
    for cls in (v for v in vars(templates).values() if inspect.isclass(v)):
        if cls.__module__ == templates.__name__ and not any(
                base.__module__.startswith("jinja2") for base in cls.__mro__):
            own.update(vars(cls))  # a class of ours alone: its attributes are ours
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            used.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.add(node.value)
    module_level = {name for name in vars(templates)}
    return {n for n in used if n.startswith("_") and not n.startswith("__")
            and n[1:2].isalpha() and n not in own and n not in module_level}


CHECKED = {"_generate", "_fail_with_undefined_error", "_undefined_message", "_undefined_hint",
           "_undefined_obj", "_undefined_name", "_loop_vars", "_block_vars"}


def test_every_private_jinja_name_templates_py_uses_is_checked_here() -> None:
    used = _private_names_used()
    assert used == CHECKED, (
        f"templates.py now uses private Jinja names not checked here: {sorted(used - CHECKED)}"
        f"; checked here but no longer used: {sorted(CHECKED - used)}. Update "
        f"tests/manifest/test_jinja_private.py with their signatures.")
