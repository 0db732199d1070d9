"""Jinja templates for manifests: sandboxed, strict, deterministic and fast.

Every template string in a manifest is compiled once into a :class:`Template`:

* strings without Jinja markup (``{{``, ``{%``, ``{#``) are constants and never reach Jinja;
* simple concatenations of names, ``a.b`` look-ups and a few filters (``slug``, ``lower``,
  ``upper``, ``trim``) render without Jinja's per-call overhead, with the same result;
* everything else renders in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
  :class:`~jinja2.StrictUndefined`: no Python internals are reachable (``__class__``,
  ``__globals__``, …), nothing can be mutated, an undefined name is an error, and the
  globals are reduced to ``range`` and ``dict``. The nondeterministic ``random`` filter is
  gone (the same manifest must give the same jobs).

Templates are written by whoever wrote the manifest, so rendering is also bounded in time and
memory (see "Resource limits" below): statements meant for composing web pages (``macro``,
``call``, ``import``, ``include``, ``extends``, ``block``, ``{% set %}…{% endset %}``,
``{% filter %}`` blocks, recursive loops) are refused at compile time; one render may run at
most :data:`MAX_LOOP_STEPS` loop iterations; no value it builds may exceed :data:`MAX_VALUE`
characters or items (checked *before* allocating for ``*``, ``+``, ``~``, ``%``, ``format``,
``replace``, ``join``, ``ljust`` and friends, and after every other call and filter); and the
output stops at :data:`MAX_RENDERED` characters.

A template also knows the top-level names it reads (:attr:`Template.refs`) and which named
prompts it uses, so expansion can cache renders by the values they depend on.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from jinja2 import StrictUndefined, TemplateAssertionError, TemplateSyntaxError, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

MARKUP = ("{{", "{%", "{#")
MAX_RENDERED = 100_000  # characters of one rendered template
MAX_VALUE = 1_000_000  # characters (text) or items (lists, mappings) of any value built
MAX_LOOP_STEPS = 100_000  # loop iterations in one render
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


# ── Resource limits ──────────────────────────────────────────────────────────────────────


class _Budget:
    """What one render may still spend, and the sizes of values it has measured."""

    __slots__ = ("sizes", "steps")

    def __init__(self) -> None:
        self.steps = MAX_LOOP_STEPS
        self.sizes: dict[int, tuple[Any, int]] = {}  # id → (value kept alive, size)


_SCALARS = frozenset({int, float, bool, type(None)})
_BUDGET: ContextVar[_Budget | None] = ContextVar("seedbatch_template_budget", default=None)


def _budget() -> _Budget:
    # outside any render (Jinja folding constants while compiling): a fresh allowance
    return _BUDGET.get() or _Budget()


def _size(value: Any, memo: dict[int, tuple[Any, int]]) -> int:
    """How big ``value`` is once written out: characters of text, one per item and scalar.

    Shared parts count every time they appear (that is what writing it out costs); counting
    stops soon after :data:`MAX_VALUE`, and containers are measured once per render."""
    if isinstance(value, str | bytes | bytearray | range):
        return len(value)
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return 1
    known = memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    total = 1
    pairs = value.items() if isinstance(value, dict) else ((item,) for item in value)
    try:
        for pair in pairs:
            for item in pair:
                total += _size(item, memo)
            if total > MAX_VALUE:
                break
    except RecursionError:
        total = MAX_VALUE + 1
    memo[id(value)] = (value, total)
    return total


def _refuse_big(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise SecurityError(f"refusing to build {what} larger than {MAX_VALUE:,} characters "
                            f"or items")


def _check(value: Any, what: str = "a value") -> Any:
    kind = type(value)
    if kind is str:
        if len(value) > MAX_VALUE:
            _refuse_big(len(value), what)
    elif kind not in _SCALARS:
        _refuse_big(_size(value, _budget().sizes), what)
    return value


def _total(values: Iterable[Any], what: str) -> int:
    """The summed size of ``values``; an integer argument above MAX_VALUE is refused."""
    total = 0
    memo = None
    for v in values:
        kind = type(v)
        if kind is str:
            total += len(v)
        elif kind is int:
            if abs(v) > MAX_VALUE:
                raise SecurityError(f"refusing {what} with an argument of {v:,} (the limit is "
                                    f"{MAX_VALUE:,})")
            total += 1
        elif kind in _SCALARS:
            total += 1
        else:
            if memo is None:
                memo = _budget().sizes
            total += _size(v, memo)
    return total


def _check_ints(values: Iterable[Any], what: str) -> None:
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_VALUE:
            raise SecurityError(f"refusing {what} with an argument of {v:,} (the limit is "
                                f"{MAX_VALUE:,})")


def _replaced_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    """The length of ``text.replace(old, new, count)``, without building it."""
    old, new = str(old), str(new)
    n = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(text) + n * (len(new) - len(old))


def _joined(items: Any, sep: Any) -> list[Any]:
    """``items`` as a list, refused if joining it with ``sep`` would be too big."""
    if not isinstance(items, list | tuple):
        items = list(_loop_guard(items)) if isinstance(items, Iterable) else items
    if isinstance(items, list | tuple):
        memo = _budget().sizes
        _refuse_big(sum(_size(i, memo) for i in items) + len(str(sep)) * len(items),
                    "a joined text")
    return items


def _loop_guard(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one render has MAX_LOOP_STEPS in all."""
    budget = _budget()
    for item in iterable:
        budget.steps -= 1
        if budget.steps < 0:
            raise SecurityError(f"refusing to run more than {MAX_LOOP_STEPS:,} loop "
                                f"iterations in one template")
        yield item


def _concat(*parts: Any) -> str:
    """``a ~ b``: refused before joining when the result would be too big."""
    memo = _budget().sizes
    _refuse_big(sum(_size(p, memo) for p in parts), "a text")
    return str_join(parts)


_CALL_PLUMBING = ("_loop_vars", "_block_vars")  # what Jinja passes along with a call


def _method_check(owner: Any, name: str, args: tuple[Any, ...],
                  keywords: list[Any]) -> tuple[Any, ...]:
    """Refuse a str/bytes/int method call whose result would be too big; the args to use."""
    kind = type(owner).__name__
    if name in ("expandtabs", "translate", "maketrans"):
        raise SecurityError(f"{kind}.{name} is not available in manifest templates")
    _check_ints((*args, *keywords), f"{kind}.{name}")
    if isinstance(owner, str) and name == "replace" and len(args) >= 2:
        _refuse_big(_replaced_size(owner, *args[:3]), "a replaced text")
    elif isinstance(owner, str) and name == "join" and args:
        args = (_joined(args[0], owner), *args[1:])
    return args


def _special_filter(name: str, own: tuple[Any, ...], kwargs: dict[str, Any],
                    what: str) -> tuple[Any, ...]:
    """Checks for the filters whose output can outgrow their input; the arguments to use."""
    if name == "replace" and len(own) >= 3:
        _refuse_big(_replaced_size(str(own[0]), *own[1:4]), "a replaced text")
    elif name == "format" and own:
        text = str(own[0])
        if _BIG_PERCENT.search(text):
            raise SecurityError("refusing a %-format with a width or precision of 10,000 or "
                                "more")
        rest = _total((*own[1:], *kwargs.values()), what)
        _refuse_big(len(text) + text.count("%") * rest, "a formatted text")
    elif name == "join" and own:
        own = (_joined(own[0], own[1] if len(own) > 1 else kwargs.get("d", "")), *own[1:])
    elif name == "sum":
        start = own[2] if len(own) > 2 else kwargs.get("start", 0)
        if not isinstance(start, int | float) or isinstance(start, bool):
            raise SecurityError("the sum filter adds up numbers only")
    return own


def _filter_check(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) with the resource limits around it."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    what = f"the {name} filter"
    special = name in ("replace", "format", "join", "sum")

    @functools.wraps(func)  # keeps jinja_pass_arg: Jinja still passes the context
    def checked(*args: Any, **kwargs: Any) -> Any:
        own = args[skip:]
        _refuse_big(_total(own, what) + (_total(kwargs.values(), what) if kwargs else 0),
                    f"the input of {what}")
        if special:
            own = _special_filter(name, own, kwargs, what)
        return _check(func(*args[:skip], *own, **kwargs), f"the result of {what}")

    return checked


def _finalize(value: Any) -> Any:
    """Every ``{{ … }}`` output passes here before it becomes text."""
    return _check(value, "an output")


_REFUSED_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Macro: "{% macro %}", nodes.CallBlock: "{% call %}", nodes.Import: "{% import %}",
    nodes.FromImport: "{% from … import %}", nodes.Include: "{% include %}",
    nodes.Extends: "{% extends %}", nodes.Block: "{% block %}",
    nodes.AssignBlock: "a {% set %} block", nodes.FilterBlock: "{% filter %}",
}


class _Limiter(NodeTransformer):
    """Refuses page-composition statements; routes loops, ``~`` and ``set`` through checks."""

    def __init__(self, env: ManifestEnvironment) -> None:
        self.env = env

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        what = _REFUSED_STATEMENTS.get(type(node))
        if what is None and isinstance(node, nodes.For) and node.recursive:
            what = "a recursive {% for %}"
        if what is not None:
            raise TemplateAssertionError(f"{what} is not available in manifest templates "
                                         f"(write the text out, or share it through "
                                         f"`prompts:`)", node.lineno)
        node = super().generic_visit(node, *args, **kwargs)
        # Jinja types For.iter and Assign.node as any Node; its parser puts an expression there
        if isinstance(node, nodes.For):
            node.iter = self.call("limited_loop", [cast(nodes.Expr, node.iter)], node)
        elif isinstance(node, nodes.Assign):
            node.node = self.call("limited_value", [cast(nodes.Expr, node.node)], node)
        elif isinstance(node, nodes.With):
            node.values = [self.call("limited_value", [v], node) for v in node.values]
        elif isinstance(node, nodes.Concat):
            return self.call("limited_concat", list(node.nodes), node)
        return node

    def call(self, name: str, args: list[nodes.Expr], where: nodes.Node) -> nodes.Call:
        call = nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None,
                          lineno=where.lineno)
        call.set_environment(self.env)
        return call


class _LimitedTemplate(JinjaTemplate):
    """A Jinja template whose ``render`` has one budget (used when Jinja is called directly)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        token = _BUDGET.set(_BUDGET.get() or _Budget())
        try:
            return super().render(*args, **kwargs)
        finally:
            _BUDGET.reset(token)


class ManifestEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox manifests render in (see the module docstring)."""

    template_class = _LimitedTemplate

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    # the names generated code calls for loops, `~` and `set` (see _Limiter)
    limited_loop = staticmethod(_loop_guard)
    limited_concat = staticmethod(_concat)
    limited_value = staticmethod(_check)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        memo = _budget().sizes
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * n > _MAX_SEQUENCE:
                        raise SecurityError(f"refusing to build a sequence of "
                                            f"{len(seq) * n:,} items (the limit is "
                                            f"{_MAX_SEQUENCE:,})")
                    _refuse_big(_size(seq, memo) * n, "a repeated sequence")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _refuse_big(_size(left, memo) + _size(right, memo), "a sum")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int)
                    and abs(right) > 1024 and abs(left) > 1):
                raise SecurityError("refusing to compute a power with an exponent above 1024")
        elif operator == "%" and isinstance(left, str):
            if _BIG_PERCENT.search(left):
                raise SecurityError("refusing a %-format with a width or precision of 10,000 "
                                    "or more")
            _refuse_big(len(left) + left.count("%") * _size(right, memo), "a formatted text")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        if __obj is _loop_guard or __obj is _concat or __obj is _check:  # our own, trusted
            return __context.call(__obj, *args, **kwargs)
        given = [v for k, v in kwargs.items() if k not in _CALL_PLUMBING]
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes | int) and not isinstance(owner, bool):
            args = _method_check(owner, getattr(__obj, "__name__", ""), args, given)
        name = getattr(__obj, "__name__", "a function")
        what = "range()" if name == "safe_range" else f"{name}()"
        _refuse_big(_total((*args, *given), what), f"the arguments of {what}")
        result = super().call(__context, __obj, *args, **kwargs)
        return _check(result, f"the result of {what}")

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        _Limiter(self).visit(source)
        return super()._generate(source, name, filename, defer_init=defer_init)

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
        if wrapped is None:
            return None
        text = value.__self__
        if _BIG_BRACE.search(text):
            return _too_big("refusing a format with a width or precision of 10,000 or more")

        def checked(*args: Any, **kwargs: Any) -> str:
            memo = _budget().sizes
            fields = text.count("{")
            _refuse_big(len(text) + fields * sum(_size(a, memo) for a in (*args,
                                                                          *kwargs.values())),
                        "a formatted text")
            return wrapped(*args, **kwargs)

        return checked


def make_environment() -> ManifestEnvironment:
    env = ManifestEnvironment(undefined=_Undefined, autoescape=False,
                              keep_trailing_newline=False, finalize=_finalize)
    env.globals = {"range": env.globals["range"], "dict": env.globals["dict"]}
    for name in _DROPPED_FILTERS:
        env.filters.pop(name, None)
    env.filters["slug"] = slug
    env.filters = {name: _filter_check(name, f) for name, f in env.filters.items()}
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
    # one str.format call: "{}" turns a value into text as str() does (format(v, "") is
    # str(v) for every value a manifest can hold; tests/manifest compare with Jinja)
    fmt = "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}"
                  for p in parts).format
    getters = tuple(p for p in parts if not isinstance(p, str))

    def render(ctx: Mapping[str, Any]) -> str:
        return fmt(*[get(ctx) for get in getters])

    return render


def _prompt_refs(ast: nodes.Template) -> frozenset[str] | None:
    """Names of ``prompts.X`` / ``prompts['X']`` read; None when prompts is used otherwise."""
    found: set[str] = set()
    resolved = 0
    # find_all yields only nodes of the types asked for (its annotation loses which)
    lookups = cast("Iterator[nodes.Getattr | nodes.Getitem]",
                   ast.find_all((nodes.Getattr, nodes.Getitem)))
    for node in lookups:
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

    @property
    def plain(self) -> bool:
        """Renders by plain substitution of names (no conditions, loops or arithmetic)."""
        return self.is_constant or self._fast is not None

    def render(self, ctx: Mapping[str, Any]) -> Any:
        """Render with ``ctx``; raises :class:`TemplateFailure` with a human message."""
        if self.is_constant:
            return self.constant
        if self._fast is not None:
            try:
                text = self._fast(ctx)
            except _Fallback:
                pass
            else:
                if len(text) > MAX_RENDERED:
                    raise TemplateFailure(f"renders to more than {MAX_RENDERED:,} characters")
                return text
        token = _BUDGET.set(_Budget())
        try:
            if self.native:
                value = to_json_value(self._expr(**ctx))
                if isinstance(value, str) and len(value) > MAX_RENDERED:
                    raise TemplateFailure(f"renders to more than {MAX_RENDERED:,} characters")
                return value
            chunks: list[str] = []
            size = 0
            for chunk in self._jinja.generate(ctx):  # stops as soon as the output is too long
                size += len(chunk)
                if size > MAX_RENDERED:
                    raise TemplateFailure(f"renders to more than {MAX_RENDERED:,} characters")
                chunks.append(chunk)
            text = "".join(chunks)
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
        finally:
            _BUDGET.reset(token)
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
