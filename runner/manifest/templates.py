"""Jinja templates for manifests: sandboxed, strict, deterministic and fast.

Every template string in a manifest is compiled once into a :class:`Template`:

* strings without Jinja markup (``{{``, ``{%``, ``{#``) are constants and never reach Jinja;
* simple concatenations of names, ``a.b`` look-ups and a few filters (``slug``, ``lower``,
  ``upper``, ``trim``) render without Jinja's per-call overhead, with the same result;
* everything else renders in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
  :class:`~jinja2.StrictUndefined`: no Python internals are reachable (``__class__``,
  ``__globals__``, …), nothing can be mutated, an undefined name is an error, and the
  globals are reduced to ``range`` and ``dict``. The nondeterministic ``random`` filter is
  gone (the same manifest must give the same jobs), and operations that would allocate
  without bound (``'x' * 10**9``, ``'%099999999d' % 1``) are refused.

A template also knows the top-level names it reads (:attr:`Template.refs`) and which named
prompts it uses, so expansion can cache renders by the values they depend on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateAssertionError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

MARKUP = ("{{", "{%", "{#")
MAX_RENDERED = 100_000  # characters of one rendered template
_MAX_SEQUENCE = 100_000
_BIG_PERCENT = re.compile(r"%[^a-zA-Z%]*(\d{5,}|\*)")
_BIG_BRACE = re.compile(r"\{[^{}]*:[^{}]*\d{5,}[^{}]*\}")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_DROPPED_FILTERS = ("random", "center", "indent", "pprint", "urlize", "xmlattr",
                    "filesizeformat", "forceescape", "wordwrap")


def slug(value: Any) -> str:
    """``"Golden Hour!"`` → ``"golden-hour"``: lowercase ASCII letters and digits joined by '-'."""
    return _slug_text(value if type(value) is str else str(value))


@lru_cache(maxsize=8192)
def _slug_text(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SLUG_DROP.sub("-", text.lower()).strip("-")


def has_markup(text: str) -> bool:
    return any(m in text for m in MARKUP)


class TemplateFailure(Exception):
    """A template that failed to render: a message and the line within the template."""

    def __init__(self, message: str, template_line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.template_line = template_line


class _Undefined(StrictUndefined):
    """StrictUndefined with messages that name what is missing and what is there."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        obj = self._undefined_obj
        if obj is missing:
            return f"undefined variable {name!r}"
        if isinstance(obj, Mapping):
            keys = ", ".join(sorted(str(k) for k in obj)) or "nothing"
            return f"no key {name!r} here (available: {keys})"
        return f"a {type(obj).__name__} value has no attribute or item {name!r}"


def _too_big(message: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise SecurityError(message)

    return refuse


class ManifestEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox manifests render in (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (isinstance(seq, str | list | tuple) and isinstance(n, int)
                        and len(seq) * n > _MAX_SEQUENCE):
                    raise SecurityError(f"refusing to build a sequence of {len(seq) * n:,} "
                                        f"items (the limit is {_MAX_SEQUENCE:,})")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int)
                    and abs(right) > 1024 and abs(left) > 1):
                raise SecurityError("refusing to compute a power with an exponent above 1024")
        elif operator == "%" and isinstance(left, str) and _BIG_PERCENT.search(left):
            raise SecurityError("refusing a %-format with a width or precision of 10,000 "
                                "or more")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, StrictUndefined):  # reading from an undefined name: say so
            obj._fail_with_undefined_error()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, StrictUndefined):
            obj._fail_with_undefined_error()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _BIG_BRACE.search(value.__self__):
            return _too_big("refusing a format with a width or precision of 10,000 or more")
        return wrapped


def make_environment() -> ManifestEnvironment:
    env = ManifestEnvironment(undefined=_Undefined, autoescape=False,
                              keep_trailing_newline=False)
    env.globals = {"range": env.globals["range"], "dict": env.globals["dict"]}
    for name in _DROPPED_FILTERS:
        env.filters.pop(name, None)
    env.filters["slug"] = slug
    return env


ENV = make_environment()

# Fast path: filters whose result equals Jinja's for any input.
_FAST_FILTERS: dict[str, Callable[[Any], str]] = {
    "slug": slug,
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "trim": lambda v: str(v).strip(),
}
_DICT_ATTRS = frozenset(dir(dict))


class _Fallback(Exception):
    """The fast path cannot decide: let Jinja render (and report) this one."""


def _fast_value(node: nodes.Node) -> Callable[[Mapping[str, Any]], Any] | None:
    if isinstance(node, nodes.Name) and node.ctx == "load":
        name = node.name

        def get_name(ctx: Mapping[str, Any]) -> Any:
            try:
                return ctx[name]
            except KeyError:
                raise _Fallback from None

        return get_name
    if (isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name)
            and node.attr not in _DICT_ATTRS):
        name, attr = node.node.name, node.attr

        def get_attr(ctx: Mapping[str, Any]) -> Any:
            obj = ctx.get(name, missing)
            if type(obj) is dict and attr in obj:
                return obj[attr]
            raise _Fallback

        return get_attr
    if (isinstance(node, nodes.Filter) and node.name in _FAST_FILTERS and not node.args
            and not node.kwargs and node.dyn_args is None and node.dyn_kwargs is None
            and node.node is not None):
        inner = _fast_value(node.node)
        if inner is None:
            return None
        func = _FAST_FILTERS[node.name]
        return lambda ctx: func(inner(ctx))
    return None


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


def _fast_renderer(ast: nodes.Template) -> Callable[[Mapping[str, Any]], str] | None:
    """A plain-Python renderer for ``text {{ a }} text {{ b.c | slug }}`` templates."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts: list[str | Callable[[Mapping[str, Any]], Any]] = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            parts.append(node.value)
        else:
            getter = _fast_value(node)
            if getter is None:
                return None
            parts.append(getter)
    frozen = tuple(parts)

    def render(ctx: Mapping[str, Any]) -> str:
        return "".join([p if type(p) is str else _text(p(ctx))  # type: ignore[operator]
                        for p in frozen])

    return render


def _prompt_refs(ast: nodes.Template) -> frozenset[str] | None:
    """Names of ``prompts.X`` / ``prompts['X']`` read; None when prompts is used otherwise."""
    found: set[str] = set()
    resolved = 0
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "prompts"):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
            resolved += 1
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.add(node.arg.value)
            resolved += 1
    total = sum(1 for n in ast.find_all(nodes.Name) if n.name == "prompts")
    return frozenset(found) if total == resolved else None


_JSON_SCALARS = (str, int, float, bool, type(None))


def to_json_value(value: Any) -> Any:
    """A native template result as plain JSON data, or TemplateFailure."""
    if isinstance(value, StrictUndefined):
        str(value)  # raises the undefined error with its message
    if isinstance(value, str):
        return str(value)  # drops Markup and other str subclasses
    if isinstance(value, float) and not math.isfinite(value):
        raise TemplateFailure("renders to a number that is not finite")
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    raise TemplateFailure(f"renders to a {type(value).__name__}, which is not a parameter "
                          f"value (string, number, boolean, list or mapping)")


def _template_line(exc: BaseException) -> int:
    line = 1
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass
class Template:
    """One compiled manifest template."""

    source: str
    refs: frozenset[str]  # top-level names read (also globals such as range)
    prompt_refs: frozenset[str] | None  # named prompts read; None = any of them
    constant: Any = None  # set when the source has no markup
    is_constant: bool = False
    native: bool = False  # a parameter that is one {{ expression }}: keeps its type
    _jinja: Any = None
    _fast: Callable[[Mapping[str, Any]], str] | None = None
    _expr: Any = None

    def render(self, ctx: Mapping[str, Any]) -> Any:
        """Render with ``ctx``; raises :class:`TemplateFailure` with a human message."""
        if self.is_constant:
            return self.constant
        try:
            if self.native:
                value = to_json_value(self._expr(**ctx))
                if isinstance(value, str) and len(value) > MAX_RENDERED:
                    raise TemplateFailure(f"renders to more than {MAX_RENDERED:,} characters")
                return value
            if self._fast is not None:
                try:
                    return self._fast(ctx)
                except _Fallback:
                    pass
            text = self._jinja.render(ctx)
        except TemplateFailure:
            raise
        except SecurityError as exc:
            raise TemplateFailure(f"unsafe template: {exc}", _template_line(exc)) from None
        except UndefinedError as exc:
            raise TemplateFailure(str(exc), _template_line(exc)) from None
        except RecursionError:
            raise TemplateFailure("template recursion too deep") from None
        except MemoryError:
            raise TemplateFailure("template needs too much memory") from None
        except Exception as exc:
            raise TemplateFailure(f"{type(exc).__name__}: {exc}", _template_line(exc)) from None
        if len(text) > MAX_RENDERED:
            raise TemplateFailure(f"renders to more than {MAX_RENDERED:,} characters")
        return text


def compile_template(source: str, *, native: bool = False,
                     env: ManifestEnvironment = ENV) -> Template:
    """Compile ``source``; raises :class:`TemplateFailure` for a syntax error.

    ``native``: if the whole source is one ``{{ expression }}``, :meth:`Template.render`
    returns the expression's value (int, float, bool, list, …) rather than text."""
    try:
        return _compile(source, native, env)
    except TemplateFailure:
        raise
    except RecursionError:
        raise TemplateFailure("template nested too deeply") from None
    except Exception as exc:  # anything else Jinja may raise while compiling
        raise TemplateFailure(f"template error: {type(exc).__name__}: {exc}") from None


def _compile(source: str, native: bool, env: ManifestEnvironment) -> Template:
    if not has_markup(source):
        return Template(source, frozenset(), frozenset(), constant=source, is_constant=True)
    try:
        ast = env.parse(source)
        refs = frozenset(meta.find_undeclared_variables(ast))  # also checks filter names
        ast = env.parse(source)  # the analysis may have annotated the tree: start afresh
    except TemplateSyntaxError as exc:
        kind = "template error" if isinstance(exc, TemplateAssertionError) else \
            "template syntax error"
        raise TemplateFailure(f"{kind}: {exc.message}", exc.lineno or 1) from None
    prompt_refs = _prompt_refs(ast) if "prompts" in refs else frozenset()
    body = ast.body
    single = (len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1
              and not isinstance(body[0].nodes[0], nodes.TemplateData))
    if native and single:
        inner = source.strip()
        if inner.startswith("{{") and inner.endswith("}}"):
            inner = inner[2:-2].strip("-+").strip()
            try:
                expr = env.compile_expression(inner, undefined_to_none=False)
            except TemplateSyntaxError as exc:
                raise TemplateFailure(f"template error: {exc.message}", 1) from None
            return Template(source, refs, prompt_refs, native=True, _expr=expr)
    fast = _fast_renderer(ast)
    try:
        jinja = env.from_string(source)
    except TemplateSyntaxError as exc:  # pragma: no cover - the analysis compiled it already
        raise TemplateFailure(f"template error: {exc.message}", exc.lineno or 1) from None
    if not refs:  # reads no variable: render once, now (a failure is reported now)
        text = Template(source, refs, prompt_refs, _jinja=jinja).render({})
        return Template(source, refs, prompt_refs, constant=text, is_constant=True)
    return Template(source, refs, prompt_refs, _jinja=jinja, _fast=fast)


__all__ = ["ENV", "ManifestEnvironment", "Template", "TemplateFailure", "compile_template",
           "has_markup", "make_environment", "slug", "to_json_value"]
