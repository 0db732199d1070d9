"""Validate a loaded manifest: JSON Schema, then every semantic rule, all problems at once.

:func:`validate_document` turns a :class:`~runner.manifest.load.Document` into a
:class:`Manifest` — aliases resolved against the catalog, templates compiled, image sets
resolved and hashed, matrices expanded — plus the list of every problem found, each a
:class:`~runner.errors.ManifestError` located at the offending node. Rules that need the
rendered jobs (undefined variables, parameters, duplicate names) run in
:mod:`runner.manifest.expand`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from runner.catalog import ModelSpec, get_model, models, provider_names
from runner.config import check_base_url
from runner.errors import ConfigError, ManifestError
from runner.jobs import Budget, ImageRef, Limits, Price
from runner.manifest.images import (
    ImageProblem,
    ImageResolver,
    is_url,
    looks_like_set_name,
    path_exists,
)
from runner.manifest.load import Document, Parts
from runner.manifest.matrix import MatrixError, expand_matrix
from runner.manifest.schema import manifest_schema
from runner.manifest.templates import (
    Template,
    TemplateFailure,
    compile_template,
    has_markup,
    slug,
)
from runner.plugins import missing_provider_message, provider_of_model, registry
from runner.spec import PORTABLE_SETTINGS

RESERVED = ("model", "index", "prompts", "job", "image")
DEFAULT_OUTPUT = "{{ job.name }}/{{ image.index }}.{{ image.ext }}"
MAX_JOBS = 1_000_000


# ── small helpers ────────────────────────────────────────────────────────────────────────


def suggest(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when something close exists, else ``""``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "…"
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "a boolean", "array": "a list", "object": "a mapping",
               "null": "null"}


def _expected(types: Any) -> str:
    if isinstance(types, str):
        return _TYPE_WORDS.get(types, types)
    return " or ".join(_TYPE_WORDS.get(t, t) for t in types)


_PATTERN_HELP = {
    "^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$":
        "is not a slug: use lowercase letters, digits, '-' and '_' (at most 64, starting "
        "and ending with a letter or digit)",
    "^[A-Za-z_][A-Za-z0-9_]*$":
        "is not a usable name: use letters, digits and '_', not starting with a digit "
        "(templates read it as {{ name }})",
    "^[A-Za-z_][A-Za-z0-9_-]*$":
        "is not a usable name: use letters, digits, '_' and '-', starting with a letter or '_'",
    "^[A-Za-z0-9_][A-Za-z0-9_.-]*$":
        "is not a usable alias: use letters, digits, '_', '.' and '-'",
    "^https?://": "is not an http:// or https:// URL",
}


_VALIDATORS: dict[int, Draft202012Validator] = {}


def manifest_validator() -> Draft202012Validator:
    """The manifest schema for the providers installed (one per registry)."""
    reg = registry()
    if id(reg) not in _VALIDATORS:
        _VALIDATORS[id(reg)] = Draft202012Validator(manifest_schema(reg))
    return _VALIDATORS[id(reg)]


def schema_errors(doc: Document) -> tuple[list[ManifestError], list[Parts]]:
    """Every JSON Schema violation, in human words, at the offending node; and their paths."""
    out: list[ManifestError] = []
    paths: list[Parts] = []
    for err in manifest_validator().iter_errors(doc.data):
        out.extend(_translate(err, doc))
        parts = tuple(err.absolute_path)
        if err.validator in ("additionalProperties", "required") and isinstance(
                err.instance, dict):
            # the object itself is fine; only the unknown or missing keys are broken
            props = err.schema.get("properties", {})
            names = (err.validator_value if err.validator == "required"
                     else [k for k in err.instance if k not in props])
            paths.extend((*parts, k) for k in names)
        else:
            paths.append(parts)
    return out, paths


def unknown_model_message(model_id: str, known: list[str]) -> str:
    """An unknown model id: a typo of an installed one, or a provider not installed."""
    provider = provider_of_model(model_id)
    if provider and provider not in registry().providers:
        return f"model {model_id!r}: {missing_provider_message(provider)}"
    return f"unknown model id {model_id!r}{suggest(model_id, known)} (known: {', '.join(known)})"


def _translate(err: ValidationError, doc: Document) -> list[ManifestError]:
    parts: Parts = tuple(err.absolute_path)
    # the keyword that failed (jsonschema gives None for a `false` subschema)
    v = err.validator if isinstance(err.validator, str) else None
    inst = err.instance
    if "propertyNames" in err.absolute_schema_path:
        key = str(inst)
        pattern = str(err.validator_value) if v == "pattern" else ""
        text = _PATTERN_HELP.get(pattern, f"does not match {pattern}")
        return [doc.error(f"key {key!r} {text}", (*parts, key), key=True)]
    # jsonschema's stubs allow an error's instance, schema and keyword value to be unset;
    # errors from iter_errors always carry them: each branch checks the shape it reads
    if (v == "additionalProperties" and isinstance(err.schema, Mapping)
            and isinstance(inst, dict)):
        schema = err.schema
        allowed = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extras = [k for k in inst if k not in schema.get("properties", {})
                  and not any(re.search(pat, k) for pat in patterns)]
        shown = ", ".join(allowed) + (", x-…" if schema.get("patternProperties") else "")
        return [doc.error(f"unknown key {k!r}{suggest(k, allowed)} (allowed here: {shown})",
                          (*parts, k), key=True) for k in extras]
    if v == "required" and isinstance(err.validator_value, list) and isinstance(inst, dict):
        missing = [k for k in err.validator_value if k not in inst]
        out = []
        for k in missing:
            hint = ""
            if parts and parts[0] == "jobs":
                hint = " (every job needs `model:` and `prompt:`)"
            elif k == "model":
                hint = " (a model id; `seedbatch models` lists them)"
            elif k == "version":
                hint = " (write `version: 1` at the top)"
            elif k == "jobs":
                hint = " (a list of jobs, each with `model:` and `prompt:`)"
            out.append(doc.error(f"missing required key {k!r}{hint}", parts))
        return out
    if v == "type":
        return [doc.error(f"expected {_expected(err.validator_value)}, got {_kind(inst)}",
                          parts)]
    if v == "const":
        if parts == ("version",):
            return [doc.error(f"unsupported manifest version {inst!r}: this seedbatch reads "
                              f"`version: 1`", parts)]
        return [doc.error(f"must be {err.validator_value!r}, got {_kind(inst)}", parts)]
    if v == "enum" and isinstance(err.validator_value, list):
        options = [str(o) for o in err.validator_value]
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "model":
            return [doc.error(unknown_model_message(str(inst), options), parts)]
        return [doc.error(f"{inst!r} is not one of: {', '.join(options)}"
                          f"{suggest(str(inst), options)}", parts)]
    if v == "pattern":
        pattern = str(err.validator_value)
        text = _PATTERN_HELP.get(pattern, f"does not match {pattern}")
        hint = ""
        if parts == ("name",) and slug(inst):
            hint = f", e.g. {slug(inst)[:64]!r}"
        return [doc.error(f"{inst!r} {text}{hint}", parts)]
    if v in ("minItems", "minProperties", "minLength"):
        return [doc.error("must not be empty", parts)]
    if v in ("minimum", "exclusiveMinimum", "maximum"):
        word = {"minimum": "at least", "exclusiveMinimum": "more than",
                "maximum": "at most"}[v]
        return [doc.error(f"must be {word} {err.validator_value}, got {inst!r}", parts)]
    if v == "uniqueItems":
        return [doc.error("lists the same entry twice", parts)]
    if v == "anyOf" and parts and parts[-1] == "model":
        deeper = [c for c in err.context or [] if tuple(c.absolute_path) != parts]
        if deeper and isinstance(inst, list):
            return [e for c in deeper for e in _translate(c, doc)]
        if isinstance(inst, list) and not inst:
            return [doc.error("must not be empty", parts)]
        return [doc.error(f"expected a model alias or a list of aliases, got {_kind(inst)}",
                          parts)]
    return [doc.error(err.message, parts)]  # pragma: no cover - every keyword is covered


# ── the validated manifest ───────────────────────────────────────────────────────────────


@dataclass
class TemplateAt:
    """A compiled template and the node it was written at."""

    template: Template
    parts: Parts


@dataclass
class Param:
    """One parameter as written: a constant, or a template rendered per job."""

    name: str
    parts: Parts
    value: Any = None
    template: Template | None = None


@dataclass
class Alias:
    name: str
    spec: ModelSpec
    params: dict[str, Param]
    price: Price
    parts: Parts  # the alias's node, or the job's model entry for a bare model id
    # portable settings (size / count / seed), each as written: value parsed, or a template
    portable: dict[str, Param] = field(default_factory=dict)


@dataclass
class ImageEntry:
    text: str
    parts: Parts
    refs: tuple[ImageRef, ...] | None = None  # resolved now (None: failed, or templated)
    template: Template | None = None  # resolved per job


@dataclass
class Matrix:
    combos: list[dict[str, Any]]
    keys: frozenset[str]  # axes and include keys
    parts: Parts | None  # None: no matrix


@dataclass
class JobEntry:
    index: int
    parts: Parts
    line: int
    name: TemplateAt | None
    aliases: list[Alias]
    prompt: TemplateAt
    matrix: Matrix
    images: list[ImageEntry]
    params: dict[str, Param]
    repeat: int
    portable: dict[str, Param] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.aliases) * len(self.matrix.combos) * self.repeat


@dataclass
class Manifest:
    """A manifest that passed validation, ready to expand."""

    doc: Document
    name: str
    description: str
    vars: dict[str, Any]
    aliases: dict[str, Alias]
    prompts: dict[str, TemplateAt]
    image_sets: dict[str, tuple[ImageRef, ...]]
    jobs: list[JobEntry]
    output: TemplateAt
    limits: dict[str, Limits] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolver: ImageResolver | None = None

    @property
    def job_count(self) -> int:
        return sum(entry.count for entry in self.jobs)


# ── semantic checks ──────────────────────────────────────────────────────────────────────


class _Checker:
    def __init__(self, doc: Document, broken: Sequence[Parts]) -> None:
        self.doc = doc
        self.errors: list[ManifestError] = []
        self.broken: list[Parts] = list(broken)
        self.resolver = ImageResolver(doc.base_dir)

    def ok(self, parts: Parts) -> bool:
        """No schema problem at, above or below ``parts``."""
        n = len(parts)
        return not any(b[:n] == parts or parts[:len(b)] == b for b in self.broken)

    def ok_fields(self, parts: Parts, fields: Sequence[str]) -> bool:
        """Nothing broken at or above ``parts``, nor within the ``fields`` that are used
        (an unknown extra key does not spoil the rest of the mapping)."""
        n = len(parts)
        if any(parts[:len(b)] == b and len(b) <= n for b in self.broken):
            return False
        return all(self.ok((*parts, f)) for f in fields)

    def error(self, message: str, parts: Parts, *, key: bool = False) -> None:
        self.errors.append(self.doc.error(message, parts, key=key))

    def template_error(self, failure: TemplateFailure, parts: Parts, suffix: str = "") -> None:
        self.errors.append(locate_template(self.doc, parts, failure, suffix))

    def compile(self, source: str, parts: Parts, prompts: Sequence[str], *,
                native: bool = False) -> Template | None:
        try:
            t = compile_template(source, native=native)
        except TemplateFailure as failure:
            self.template_error(failure, parts)
            return None
        if t.prompt_refs:
            for name in sorted(t.prompt_refs - set(prompts)):
                self.error(f"unknown prompt {name!r} in prompts.{name}{suggest(name, prompts)}"
                           f" (prompts: {', '.join(prompts) or 'none defined'})", parts)
                return None
        return t


def locate_template(doc: Document, parts: Parts, failure: TemplateFailure,
                    suffix: str = "") -> ManifestError:
    """A template failure at the line it happened on within the template's node."""
    pos = doc.pos(parts)
    line = pos.line + failure.template_line - 1 + (1 if pos.style in ("|", ">") else 0)
    col = pos.col
    if line != pos.line:
        text = doc.line_text(line)
        col = len(text) - len(text.lstrip()) + 1 if text.strip() else 1
    loc = doc.where(parts)
    return ManifestError(failure.message + suffix, loc.file, line, col, loc.path)


def _check_reserved(ck: _Checker, mapping: dict[str, Any], parts: Parts, what: str) -> None:
    for key in mapping:
        if key in RESERVED:
            ck.error(f"{what} {key!r} is a reserved name (templates use "
                     f"{', '.join(RESERVED)} for themselves); rename it", (*parts, key),
                     key=True)


def check_matrix(ck: _Checker, raw: Any, parts: Parts) -> Matrix | None:
    if not ck.ok(parts) or not isinstance(raw, dict):
        return None
    axes = {k: v for k, v in raw.items() if k not in ("include", "exclude")}
    _check_reserved(ck, axes, parts, "matrix axis")
    bad = False
    for j, entry in enumerate(raw.get("exclude") or []):
        for key in entry:
            if key not in axes:
                ck.error(f"exclude key {key!r} is not a matrix axis (axes: "
                         f"{', '.join(axes) or 'none'}){suggest(key, axes)}",
                         (*parts, "exclude", j, key), key=True)
                bad = True
    for j, entry in enumerate(raw.get("include") or []):
        _check_reserved(ck, entry, (*parts, "include", j), "matrix key")
    size = math.prod(len(v) for v in axes.values()) if axes else 1
    if size > MAX_JOBS:
        ck.error(f"this matrix has {size:,} combinations; the limit is {MAX_JOBS:,}", parts)
        return None
    if bad:
        return None
    try:
        combos = expand_matrix(raw)
    except MatrixError as exc:  # too much work to expand
        ck.error(str(exc), parts)
        return None
    keys = frozenset(k for c in combos for k in c) | frozenset(axes)
    return Matrix(combos, keys, parts)


def _params(ck: _Checker, raw: Any, parts: Parts, prompts: Sequence[str]) -> dict[str, Param]:
    out: dict[str, Param] = {}
    if not isinstance(raw, dict):
        return out
    for name, value in raw.items():
        p = (*parts, name)
        if isinstance(value, str) and has_markup(value):
            t = ck.compile(value, p, prompts, native=True)
            if t is not None:
                out[name] = Param(name, p, template=t)
        else:
            out[name] = Param(name, p, value=value)
    return out


_SIZE = re.compile(r"\s*([0-9]+)\s*[xX×]\s*([0-9]+)\s*")


def portable_value(name: str, value: Any) -> tuple[Any, str | None]:
    """A portable setting's value as the translators take it (``size`` → (width, height),
    ``count`` and ``seed`` → int), or why it is not one. For constants here and for
    templates' renders in expansion alike."""
    if name == "size":
        m = _SIZE.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            return None, (f"size must be WIDTHxHEIGHT in pixels, e.g. 2048x1536 (got "
                          f"{value!r})")
        w, h = int(m.group(1)), int(m.group(2))
        if w < 1 or h < 1:
            return None, f"size {value!r}: width and height must be at least 1"
        return (w, h), None
    if isinstance(value, bool) or not isinstance(value, int):
        return None, f"{name} must be a whole number (got {value!r})"
    if name == "count" and value < 1:
        return None, f"count must be at least 1 (got {value})"
    if name == "seed" and value < 0:
        return None, f"seed must be 0 or more (got {value})"
    return value, None


def _portable(ck: _Checker, body: Mapping[str, Any], parts: Parts,
              prompts: Sequence[str]) -> dict[str, Param]:
    """The portable settings written at ``parts`` (a model alias or a job)."""
    out: dict[str, Param] = {}
    for name in PORTABLE_SETTINGS:
        if name not in body or not ck.ok((*parts, name)):
            continue
        value, p = body[name], (*parts, name)
        if isinstance(value, str) and has_markup(value):
            t = ck.compile(value, p, prompts, native=True)
            if t is not None:
                out[name] = Param(name, p, template=t)
            continue
        parsed, problem = portable_value(name, value)
        if problem:
            ck.error(problem, p)
        else:
            out[name] = Param(name, p, value=parsed)
    return out


def _resolve_entry(ck: _Checker, text: str, parts: Parts,
                   sets: dict[str, tuple[ImageRef, ...] | None]) -> tuple[ImageRef, ...] | None:
    if text in sets:
        return sets[text]
    if (not is_url(text) and looks_like_set_name(text)
            and not path_exists(ck.doc.base_dir / text)):
        names = list(sets)
        ck.error(f"unknown image set {text!r}{suggest(text, names)} (image sets: "
                 f"{', '.join(names) or 'none defined'}; a local file needs its path, e.g. "
                 f"refs/{text}.png)", parts)
        return None
    try:
        return ck.resolver.resolve(text)
    except ImageProblem as exc:
        ck.error(str(exc), parts)
        return None


def validate_document(doc: Document) -> tuple[Manifest | None, list[ManifestError]]:
    """Schema and semantic checks; the manifest model (None if unusable) and every problem."""
    data = doc.data
    problems, broken = schema_errors(doc)
    ck = _Checker(doc, broken)
    ck.errors.extend(problems)

    stem = slug(doc.path.stem)[:64].strip("-") or "manifest"
    name = data.get("name") if ck.ok(("name",)) and isinstance(data.get("name"), str) else stem
    variables = data.get("vars") or {} if ck.ok(("vars",)) else {}
    if isinstance(variables, dict):
        _check_reserved(ck, variables, ("vars",), "variable")
    else:
        variables = {}

    # prompts, in declaration order; each may use the ones above it
    prompts: dict[str, TemplateAt] = {}
    raw_prompts = data.get("prompts") or {}
    if ck.ok(("prompts",)) and isinstance(raw_prompts, dict):
        declared = list(raw_prompts)
        for i, (pname, source) in enumerate(raw_prompts.items()):
            p = ("prompts", pname)
            t = ck.compile(source, p, declared)
            if t is None:
                continue
            later = sorted(t.prompt_refs & set(declared[i:])) if t.prompt_refs else []
            if later:
                ck.error(f"prompt {pname!r} uses prompts.{later[0]}, which is not declared "
                         f"above it (a prompt can only use prompts declared before it)", p)
                continue
            prompts[pname] = TemplateAt(t, p)
    prompt_names = list(raw_prompts) if isinstance(raw_prompts, dict) else []

    # model aliases
    aliases: dict[str, Alias] = {}
    raw_models = data.get("models") or {}
    if isinstance(raw_models, dict):
        for alias, body in raw_models.items():
            p = ("models", alias)
            if not ck.ok_fields(p, ("model", "params", "price", *PORTABLE_SETTINGS)) or \
                    not isinstance(body, dict):
                continue
            spec = get_model(body.get("model", ""))
            if spec is None:
                continue
            price = spec.price  # the alias's `price:` replaces the list price as a whole
            given = body.get("price") or {}
            if given:
                price = Price(given.get("usd_per_image"), given.get("credits_per_image"))
            n_errors = len(ck.errors)
            params = _params(ck, body.get("params") or {}, (*p, "params"), prompt_names)
            portable = _portable(ck, body, p, prompt_names)
            if len(ck.errors) == n_errors:  # else jobs using it are skipped, not misjudged
                aliases[alias] = Alias(alias, spec, params, price, p, portable)

    # image sets
    sets: dict[str, tuple[ImageRef, ...] | None] = {}
    raw_sets = data.get("image_sets") or {}
    if isinstance(raw_sets, dict):
        for set_name, set_entries in raw_sets.items():
            p = ("image_sets", set_name)
            if not ck.ok(p) or not isinstance(set_entries, list):
                sets[set_name] = None
                continue
            refs: list[ImageRef] = []
            failed = False
            for j, text in enumerate(set_entries):
                if any(m in text for m in ("{{", "{%")):
                    ck.error("image set entries are not templates; put a templated path in "
                             "the job's `images:` instead", (*p, j))
                    failed = True
                    continue
                if text in raw_sets or (not is_url(text) and looks_like_set_name(text)
                                        and not path_exists(doc.base_dir / text)):
                    ck.error(f"{text!r} looks like an image set name; an image set lists "
                             f"paths, globs or URLs (no such file either)", (*p, j))
                    failed = True
                    continue
                try:
                    refs.extend(ck.resolver.resolve(text))
                except ImageProblem as exc:
                    ck.error(str(exc), (*p, j))
                    failed = True
            sets[set_name] = None if failed else tuple(refs)

    top_matrix = None
    if "matrix" in data:
        top_matrix = check_matrix(ck, data["matrix"], ("matrix",))
    no_matrix = Matrix([{}], frozenset(), None)

    # output names
    output_src = DEFAULT_OUTPUT
    raw_output = data.get("output") or {}
    if ck.ok(("output",)) and isinstance(raw_output, dict) and "filename" in raw_output:
        output_src = raw_output["filename"]
    out_t = ck.compile(output_src, ("output", "filename"), prompt_names)

    # providers, limits, budget
    providers: dict[str, dict[str, Any]] = {}
    raw_providers = data.get("providers") or {}
    if ck.ok(("providers",)) and isinstance(raw_providers, dict):
        for pname, body in raw_providers.items():
            providers[pname] = dict(body)
            if "base_url" in body:
                try:
                    check_base_url(body["base_url"], f"providers.{pname}.base_url")
                except ConfigError as exc:
                    msg = str(exc).split(": ", 1)[-1]
                    ck.error(msg, ("providers", pname, "base_url"))
    limits: dict[str, Limits] = {}
    raw_limits = data.get("limits") or {}
    for pname in provider_names():
        body = raw_limits.get(pname) if isinstance(raw_limits, dict) else None
        if isinstance(body, dict) and ck.ok(("limits", pname)):
            limits[pname] = Limits(body.get("concurrency"), body.get("requests_per_minute"))
        else:
            limits[pname] = Limits()
    raw_budget = data.get("budget") or {}
    budget = Budget()
    if isinstance(raw_budget, dict) and ck.ok(("budget",)):
        budget = Budget(raw_budget.get("max_usd"), raw_budget.get("max_credits"))

    # jobs
    entries: list[JobEntry] = []
    raw_jobs = data.get("jobs")
    if isinstance(raw_jobs, list):
        for i, body in enumerate(raw_jobs):
            entry = _job_entry(ck, i, body, aliases, sets, top_matrix, no_matrix,
                               "matrix" in data, prompt_names)
            if entry is not None:
                entries.append(entry)

    total = sum(e.count for e in entries)
    if total > MAX_JOBS:
        ck.error(f"this manifest expands to {total:,} jobs; the limit is {MAX_JOBS:,}",
                 ("jobs",))

    description = data.get("description", "") if isinstance(data.get("description"),
                                                               str) else ""
    if out_t is None or total > MAX_JOBS:  # a sweep over the limit is never expanded
        return None, ck.errors
    manifest = Manifest(doc, name, description, variables, aliases, prompts,
                        {k: v for k, v in sets.items() if v is not None}, entries,
                        TemplateAt(out_t, ("output", "filename")), limits, budget, providers,
                        ck.resolver)
    return manifest, ck.errors


def _job_entry(ck: _Checker, i: int, body: Any, aliases: dict[str, Alias],
               sets: dict[str, tuple[ImageRef, ...] | None], top_matrix: Matrix | None,
               no_matrix: Matrix, has_top_matrix: bool,
               prompt_names: list[str]) -> JobEntry | None:
    p: Parts = ("jobs", i)
    if not isinstance(body, dict):
        return None
    usable = ck.ok_fields(p, ("name", "model", "prompt", "matrix", "images", "params",
                              "repeat", *PORTABLE_SETTINGS))
    line = ck.doc.pos(p).line

    # models: aliases or bare model ids
    chosen: list[Alias] = []
    raw_model = body.get("model")
    items = [(raw_model, (*p, "model"))] if isinstance(raw_model, str) else (
        [(m, (*p, "model", k)) for k, m in enumerate(raw_model)]
        if isinstance(raw_model, list) else [])
    known_aliases = list(ck.doc.data.get("models") or {}) if isinstance(
        ck.doc.data.get("models"), dict) else []
    for item, ip in items:
        if not isinstance(item, str):
            continue
        if item in aliases:
            chosen.append(aliases[item])
        elif item in known_aliases:
            usable = False  # the alias itself has a problem, reported there
        elif (spec := get_model(item)) is not None:
            chosen.append(Alias(item, spec, {}, spec.price, ip))
        elif "/" in item and provider_of_model(item) not in registry().providers:
            ck.error(unknown_model_message(item, list(models())), ip)
            usable = False
        else:
            options = known_aliases + list(models())
            ck.error(f"unknown model alias or id {item!r}{suggest(item, options)} (aliases: "
                     f"{', '.join(known_aliases) or 'none defined'}; model ids: "
                     f"{', '.join(models())})", ip)
            usable = False

    name_t = None
    if isinstance(body.get("name"), str) and ck.ok((*p, "name")):
        t = ck.compile(body["name"], (*p, "name"), prompt_names)
        name_t = TemplateAt(t, (*p, "name")) if t is not None else None
        usable = usable and t is not None
    prompt_t = None
    if isinstance(body.get("prompt"), str) and ck.ok((*p, "prompt")):
        t = ck.compile(body["prompt"], (*p, "prompt"), prompt_names)
        prompt_t = TemplateAt(t, (*p, "prompt")) if t is not None else None
    usable = usable and prompt_t is not None

    if "matrix" in body:
        matrix = check_matrix(ck, body["matrix"], (*p, "matrix"))
    else:
        matrix = top_matrix if has_top_matrix else no_matrix
    if matrix is None:
        usable = False
    elif not matrix.combos:
        where = matrix.parts or p
        ck.error("the matrix leaves no combination (every one is excluded), so this job "
                 "would never run", where)
        usable = False

    images: list[ImageEntry] = []
    raw_images = body.get("images") or []
    if isinstance(raw_images, list) and ck.ok((*p, "images")):
        for k, text in enumerate(raw_images):
            ip = (*p, "images", k)
            if has_markup(text):
                t = ck.compile(text, ip, prompt_names)
                if t is None:
                    usable = False
                    continue
                if t.is_constant:
                    refs = _resolve_entry(ck, t.constant, ip, sets)
                    usable = usable and refs is not None
                    images.append(ImageEntry(text, ip, refs=refs))
                else:
                    images.append(ImageEntry(text, ip, template=t))
                continue
            refs = _resolve_entry(ck, text, ip, sets)
            if refs is None:
                usable = False
            images.append(ImageEntry(text, ip, refs=refs))

    n_errors = len(ck.errors)
    params = _params(ck, body.get("params") or {}, (*p, "params"), prompt_names)
    portable = _portable(ck, body, p, prompt_names)
    usable = usable and len(ck.errors) == n_errors and ck.ok((*p, "params"))
    repeat = body.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        usable = False
    if not usable or matrix is None or prompt_t is None:
        return None
    return JobEntry(i, p, line, name_t, chosen, prompt_t, matrix, images, params, repeat,
                    portable)
