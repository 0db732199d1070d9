"""Expand a validated manifest into concrete :class:`~runner.jobs.Job` values.

Order is deterministic: job entries as written, then the entry's model list, then matrix
combinations, then the repeat index. Each job's key is :func:`runner.jobs.job_key` of what
the provider will be asked — model id, rendered prompt, final parameters (model defaults <
alias params < job params), reference images (local files by content sha256, URLs by URL)
and the repeat index — so adding a matrix value never changes another job's key.

Speed (100,000 jobs in well under the budget of 3 s): every template is compiled once; a
template is rendered once per distinct value of what it reads (an entry-level cache keyed
by alias, combination and index, each only when the template depends on it); rendered
parameters are checked against the model once per distinct parameter set; each image file
is hashed once.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from runner.errors import ManifestError
from runner.jobs import Estimate, ImageRef, Job, canonical_json, job_key
from runner.manifest.images import ImageProblem, is_url, looks_like_set_name, path_exists
from runner.manifest.load import Parts
from runner.manifest.templates import Template, TemplateFailure, slug
from runner.manifest.validate import (
    Alias,
    JobEntry,
    Manifest,
    Param,
    locate_template,
    portable_value,
    suggest,
)
from runner.spec import ModelSpec, Portable

_MISS = object()


class _Failed(Enum):
    """A render or an image list that failed (its problem is already in the bag)."""

    FAILED = "failed"


_FAILED: Final = _Failed.FAILED

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PROMPT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF, CR are text
# direction overrides and isolates (the "Trojan Source" characters), zero-width space, word
# joiner and a stray byte order mark: text that displays differently from what it is
_INVISIBLE = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


def _char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def odd_character(text: str) -> str | None:
    """Why ``text`` cannot name a job or a file as it is (a control character, or one that is
    invisible or turns the text around), or None."""
    if text.isprintable():  # no control and no format (Cf) character: the common case
        return None
    found = _CONTROL.search(text)
    if found:
        return f"a control character ({_char(found.group())})"
    if not text.isascii():
        found = _INVISIBLE.search(text)
        if found:
            return f"an invisible or direction-changing character ({_char(found.group())})"
    return None


def name_key(name: str) -> str:
    """Job names are the same when their text is (NFC and NFD spellings look identical)."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)


def describe_combo(alias: str, combo: Mapping[str, Any], index: int, repeat: int) -> str:
    bits = [f"model {alias}"]
    bits += [f"{k}={v}" for k, v in combo.items()]
    if repeat > 1:
        bits.append(f"index {index}")
    return ", ".join(bits)


class ErrorBag:
    """Collects problems, one per (place, message), counting how many jobs hit each."""

    def __init__(self, manifest: Manifest) -> None:
        self.m = manifest
        self._seen: dict[tuple[Parts, str], list[Any]] = {}

    def add(self, parts: Parts, message: str, where: str = "",
            failure: TemplateFailure | None = None) -> None:
        k = (parts, message)
        entry = self._seen.get(k)
        if entry is None:
            self._seen[k] = [where, 1, failure]
        else:
            entry[1] += 1

    def errors(self) -> list[ManifestError]:
        out = []
        for (parts, message), (where, count, failure) in self._seen.items():
            suffix = f" [{where}]" if where else ""
            if count > 1:
                suffix += f" (and {count - 1} more job{'s' if count > 2 else ''})"
            if failure is not None:
                out.append(locate_template(self.m.doc, parts, failure, suffix))
            else:
                out.append(self.m.doc.error(message + suffix, parts))
        return out

    def __bool__(self) -> bool:
        return bool(self._seen)


def _undefined_hint(message: str, names: list[str]) -> str:
    prefix = "undefined variable '"
    if message.startswith(prefix) and message.endswith("'"):
        return message + suggest(message[len(prefix):-1], names)
    return message


@dataclass(slots=True)
class _Slot:
    """A template as used by one job entry: what it depends on, and its render cache."""

    t: Template
    parts: Parts
    dm: bool  # reads model.*
    dc: bool  # reads a matrix value
    di: bool  # reads index
    prompts: tuple[str, ...]  # named prompts it reads
    cache: dict[tuple[int, int, int], Any]
    unique: bool  # depends on everything that varies: caching would not pay


class _EntryExpander:
    def __init__(self, m: Manifest, entry: JobEntry, bag: ErrorBag,
                 names: dict[str, tuple[int, str, str]]) -> None:
        self.m = m
        self.entry = entry
        self.bag = bag
        self.names = names
        self.keys = entry.matrix.keys
        self.n_alias = len(entry.aliases)
        self.n_combo = len(entry.matrix.combos)
        self.prompt_slots: dict[str, _Slot] = {}
        for pname, pt in m.prompts.items():
            self.prompt_slots[pname] = self.slot(pt.template, pt.parts, before=pname)
        self.ctx_names = sorted(set(m.vars) | set(self.keys)
                                | {"model", "index", "prompts"})

    # -- dependency analysis --------------------------------------------------------------

    def slot(self, t: Template, parts: Parts, before: str | None = None) -> _Slot:
        refs = t.refs
        if t.prompt_refs is None:
            names = list(self.m.prompts)
            if before is not None:
                names = names[: names.index(before)]
            used = tuple(names)
        else:
            used = tuple(n for n in self.m.prompts if n in t.prompt_refs)
        dm = "model" in refs
        dc = bool(refs & self.keys)
        di = "index" in refs
        for name in used:
            ps = self.prompt_slots.get(name)
            if ps is not None:
                dm, dc, di = dm or ps.dm, dc or ps.dc, di or ps.di
        unique = ((dm or self.n_alias == 1) and (dc or self.n_combo == 1)
                  and (di or self.entry.repeat == 1))
        return _Slot(t, parts, dm, dc, di, used, {}, unique)

    # -- expansion ----------------------------------------------------------------------

    def run(self, out: list[Job]) -> None:
        m, e = self.m, self.entry
        name_slot = self.slot(e.name.template, e.name.parts) if e.name else None
        prompt_slot = self.slot(e.prompt.template, e.prompt.parts)
        image_slots: list[tuple[int, _Slot]] = [
            (k, self.slot(img.template, img.parts)) for k, img in enumerate(e.images)
            if img.template is not None]
        static_images: tuple[ImageRef, ...] | None = None
        if not image_slots:
            static_images = tuple(r for img in e.images for r in (img.refs or ()))
        image_cache: dict[tuple[int, int, int], tuple[ImageRef, ...] | _Failed] = {}
        images: tuple[ImageRef, ...] | _Failed | None
        img_dc = any(s.dc for _, s in image_slots)
        img_di = any(s.di for _, s in image_slots)
        img_dm = any(s.dm for _, s in image_slots)
        bag = self.bag
        clean_prompt: Any = None  # the last prompt found free of control characters
        names = self.names
        variables = m.vars
        cur: list[Any] = [0, 0, 0, None, None, None]  # alias i, combo i, index, ctx, combo, alias

        def get(s: _Slot) -> Any:
            """A slot's value for the current job: from its cache, else rendered."""
            ai_, ci_, ix = cur[0], cur[1], cur[2]
            k = (ai_ if s.dm else -1, ci_ if s.dc else -1, ix if s.di else -1)
            r = _MISS if s.unique else s.cache.get(k, _MISS)
            if r is _MISS:
                r = self.render(s, cur[3], ix, get, cur[4], cur[5])
                if not s.unique:
                    s.cache[k] = r
            return r

        for ai, alias in enumerate(e.aliases):
            spec = alias.spec
            model_ctx = {"alias": alias.name, "id": spec.id, "provider": spec.provider}
            merged: dict[str, Param] = {**alias.params, **e.params}
            const = {k: p.value for k, p in merged.items() if p.template is None}
            param_slots = [(k, p, self.slot(p.template, p.parts))
                           for k, p in merged.items() if p.template is not None]
            # portable settings: the job's over the alias's; (name, Param, slot or None)
            portable_spec = [(k, p, self.slot(p.template, p.parts) if p.template else None)
                             for k, p in {**alias.portable, **e.portable}.items()]
            p_dc = any(s.dc for _, _, s in param_slots) or any(
                s.dc for _, _, s in portable_spec if s is not None)
            p_di = any(s.di for _, _, s in param_slots) or any(
                s.di for _, _, s in portable_spec if s is not None)
            params_cache: dict[tuple[int, int, int], Any] = {}
            check_cache: dict[tuple[str, int], list[tuple[str, str]]] = {}
            estimates: dict[int, Estimate] = {}
            price = alias.price
            for ci, combo in enumerate(e.matrix.combos):
                base: dict[str, Any] = {**variables, **combo, "model": model_ctx}
                cur[0], cur[1], cur[3], cur[4], cur[5] = ai, ci, base, combo, alias
                for index in range(e.repeat):
                    failed = False
                    cur[2] = index

                    # name
                    if name_slot is not None:
                        name = get(name_slot)
                        if name is _FAILED:
                            failed = True
                        elif not name.strip():
                            bag.add(name_slot.parts, "the job name renders empty",
                                    describe_combo(alias.name, combo, index, e.repeat))
                            failed = True
                        elif (odd := odd_character(name)) is not None:
                            bag.add(name_slot.parts, f"the job name {name!r} contains {odd}",
                                    describe_combo(alias.name, combo, index, e.repeat))
                            failed = True
                    else:
                        name = self.default_name(alias, combo, index)
                        if name in names:  # slugs of different values meet: 'Tent', 'tent'
                            n = 2
                            while f"{name}-{n}" in names:
                                n += 1
                            name = f"{name}-{n}"
                    prompt = get(prompt_slot)
                    if prompt is _FAILED:
                        failed = True
                    elif isinstance(prompt, str) and not prompt.strip():
                        bag.add(prompt_slot.parts, "the prompt renders empty",
                                describe_combo(alias.name, combo, index, e.repeat))
                        failed = True
                    elif prompt is not clean_prompt:
                        bad = _PROMPT_CONTROL.search(prompt) if isinstance(prompt, str) else None
                        if bad:
                            bag.add(prompt_slot.parts, f"the prompt contains a control "
                                    f"character ({_char(bad.group())})",
                                    describe_combo(alias.name, combo, index, e.repeat))
                            failed = True
                        else:
                            clean_prompt = prompt  # renders are cached: check each one once

                    # images
                    if static_images is not None:
                        images = static_images
                    else:
                        ik = (ai if img_dm else -1, ci if img_dc else -1,
                              index if img_di else -1)
                        images = image_cache.get(ik)
                        if images is None:
                            images = self.images(image_slots, get, alias, combo, index)
                            image_cache[ik] = images
                        if images is _FAILED:
                            failed = True

                    # params: portable settings translated, explicit params over them
                    n_refs = len(images) if images is not _FAILED else -1
                    pk = (ci if p_dc else -1, index if p_di else -1,
                          n_refs if portable_spec else -1)
                    cached = params_cache.get(pk)
                    if cached is None:
                        values = dict(const)
                        params_failed = False
                        for pname, _p, s in param_slots:
                            v = get(s)
                            if v is _FAILED:
                                params_failed = True
                            values[pname] = v
                        if portable_spec:
                            translated = self.portable(spec, portable_spec, get, n_refs,
                                                       alias, combo, index)
                            if translated is None:
                                params_failed = True
                            else:
                                values = {**translated, **values}
                        final = spec.with_defaults(values)
                        cached = (final, canonical_json(final) if not params_failed else "",
                                  spec.images_per_job(final))
                        if not params_failed:
                            params_cache[pk] = cached
                    final, canon, n = cached
                    params_ok = bool(canon)
                    failed = failed or not params_ok

                    # the model's own rules, once per distinct parameter set (checked even
                    # when the name or prompt failed, so every problem shows at once)
                    if params_ok and images is not _FAILED:
                        ck = (canon, len(images))
                        problems = check_cache.get(ck)
                        if problems is None:
                            problems = spec.check(final, len(images))
                            check_cache[ck] = problems
                        if problems:
                            label = name if isinstance(name, str) else self.default_name(
                                alias, combo, index)
                            for where, message in problems:
                                self.param_problem(where, message, merged, label)
                            failed = True
                    if failed or images is _FAILED:  # (images failed: so did the job)
                        continue

                    est = estimates.get(n)
                    if est is None:
                        est = Estimate(n, float(n * (price.usd_per_image or 0.0)),
                                       float(n * (price.credits_per_image or 0.0)))
                        estimates[n] = est
                    key = name_key(name)
                    prior = names.get(key)
                    if prior is not None:
                        name_at = name_slot.parts if name_slot else e.parts
                        spelt = "" if prior[2] == name else (
                            f", spelt {prior[2]!r} there: the same text in another Unicode "
                            f"form")
                        bag.add(name_at, f"job name {name!r} is used twice (first by jobs"
                                f"[{prior[0]}], model {prior[1]}{spelt}); job names must be "
                                f"unique: add the varying parts to the name, e.g. "
                                f"{{{{ index }}}} or a matrix value",
                                describe_combo(alias.name, combo, index, e.repeat))
                        continue
                    names[key] = (e.index, alias.name, name)
                    out.append(Job(
                        key=job_key(spec.id, prompt, final, images, index,
                                    canonical_params=canon),
                        name=name, alias=alias.name, model=spec.id, provider=spec.provider,
                        prompt=prompt, params=dict(final), images=images, index=index,
                        axes=combo, price=price, estimate=est, line=e.line))

    def default_name(self, alias: Alias, combo: Mapping[str, Any], index: int) -> str:
        bits = [f"job{self.entry.index + 1}"]
        bits += [slug(v) or "x" for v in combo.values()]
        bits.append(slug(alias.name) or "model")
        if self.entry.repeat > 1:
            bits.append(str(index))
        return "-".join(bits)

    def render(self, s: _Slot, ctx: dict[str, Any], index: int, get: Any,
               combo: Mapping[str, Any], alias: Alias) -> Any:
        ctx["index"] = index
        if s.prompts:
            rendered = {}
            for pname in s.prompts:
                v = get(self.prompt_slots[pname])
                if v is _FAILED:
                    return _FAILED
                rendered[pname] = v
            ctx["prompts"] = rendered
        try:
            return s.t.render(ctx)
        except TemplateFailure as failure:
            failure.message = _undefined_hint(failure.message, self.ctx_names)
            self.bag.add(s.parts, failure.message,
                         describe_combo(alias.name, combo, index, self.entry.repeat),
                         failure)
            return _FAILED

    def images(self, slots: list[tuple[int, _Slot]], get: Any, alias: Alias,
               combo: Mapping[str, Any], index: int) -> tuple[ImageRef, ...] | _Failed:
        by_pos = dict(slots)
        out: list[ImageRef] = []
        failed = False
        for k, img in enumerate(self.entry.images):
            if img.template is None:
                out.extend(img.refs or ())
                continue
            text = get(by_pos[k])
            if text is _FAILED:
                failed = True
                continue
            try:
                out.extend(self.resolve_image(str(text)))
            except ImageProblem as exc:
                self.bag.add(img.parts, str(exc),
                             describe_combo(alias.name, combo, index, self.entry.repeat))
                failed = True
        return _FAILED if failed else tuple(out)

    def resolve_image(self, text: str) -> tuple[ImageRef, ...]:
        sets = self.m.image_sets
        if text in sets:
            return sets[text]
        if (not is_url(text) and looks_like_set_name(text)
                and not path_exists(self.m.doc.base_dir / text)):
            raise ImageProblem(f"unknown image set {text!r}{suggest(text, sets)}")
        assert self.m.resolver is not None
        return self.m.resolver.resolve(text)

    def portable(self, spec: ModelSpec, given: list[tuple[str, Param, _Slot | None]],
                 get: Any, n_refs: int, alias: Alias, combo: Mapping[str, Any],
                 index: int) -> dict[str, Any] | None:
        """The model's own parameters for the portable settings ``given`` (None: a problem,
        reported at the setting that caused it)."""
        values: dict[str, Any] = {}
        where = {name: p.parts for name, p, _ in given}
        ok = True
        for name, p, s in given:
            if s is None:
                values[name] = p.value
                continue
            v = get(s)
            if v is _FAILED:
                ok = False
                continue
            parsed, problem = portable_value(name, v)
            if problem:
                self.bag.add(p.parts, problem,
                             describe_combo(alias.name, combo, index, self.entry.repeat))
                ok = False
            values[name] = parsed
        if not ok or n_refs < 0:
            return None
        params, problems = spec.translate(Portable(**values), n_refs)
        for setting, message in problems:
            self.bag.add(where.get(setting, self.entry.parts), message,
                         describe_combo(alias.name, combo, index, self.entry.repeat))
        return None if problems else params

    def param_problem(self, where: str, message: str, merged: Mapping[str, Param],
                      name: str) -> None:
        e = self.entry
        parts: Parts
        if where.startswith("params."):
            pname = where.split(".", 1)[1].split(".", 1)[0].split("[", 1)[0]
            if pname in merged:  # point at whoever set the value
                parts = merged[pname].parts
            else:  # a model default: point at the job's params (or the job)
                parts = (*e.parts, "params") if e.params else e.parts
        elif where == "images":
            parts = (*e.parts, "images") if e.images else e.parts
        else:  # pragma: no cover - the catalog reports params.* and images only
            parts = e.parts
        self.bag.add(parts, message, f"job {name!r}")


def expand(manifest: Manifest) -> tuple[list[Job], list[ManifestError]]:
    """All jobs of ``manifest`` in order, and every problem met while rendering them."""
    bag = ErrorBag(manifest)
    jobs: list[Job] = []
    names: dict[str, tuple[int, str, str]] = {}  # name_key → (entry, alias, name)
    spans: list[tuple[JobEntry, int]] = []
    for entry in manifest.jobs:
        spans.append((entry, len(jobs)))
        _EntryExpander(manifest, entry, bag, names).run(jobs)
    _refuse_twins(jobs, spans, bag)
    return jobs, bag.errors()


def _refuse_twins(jobs: list[Job], spans: list[tuple[JobEntry, int]], bag: ErrorBag) -> None:
    """Two jobs asking a provider exactly the same thing share one key: they would be paid
    for twice for one result (or silently collapse into one when outputs are reused)."""
    first: dict[str, Job] = {}
    twins = [(job, twin) for job in jobs if (twin := first.setdefault(job.key, job)) is not job]
    if not twins:
        return
    starts = [start for _, start in spans]
    position = {id(job): i for i, job in enumerate(jobs)}
    for job, twin in twins:
        entry = spans[bisect_right(starts, position[id(job)]) - 1][0]
        where = entry.name.parts if entry.name else entry.parts
        bag.add(where, f"job {job.name!r} asks exactly what job {twin.name!r} asks (same "
                f"model, prompt, parameters, images and repeat index): it would be paid "
                f"for twice for one result; for more samples use repeat:, otherwise make "
                f"the requests differ")
