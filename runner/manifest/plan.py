"""From a manifest file to a :class:`~runner.jobs.Plan`, and pure summaries of a plan.

* :func:`load_manifest` — read + validate; the :class:`~runner.manifest.validate.Manifest`.
* :func:`load_plan` — read + validate + expand + check output names; the Plan.
* :func:`check` — the same, returning the plan (or None) and every problem instead of
  raising: what ``seedbatch validate`` prints.
* :func:`summarize` / :func:`plan_document` — jobs by model with estimated cost, and the
  ``seedbatch plan --json`` document. Both take an optional ``status`` (job key → "new",
  "cached", "changed", …) so a cache-aware caller can show it.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner.errors import ManifestError, ManifestErrors
from runner.jobrecord import job_to_dict
from runner.jobs import Estimate, ImageRef, Job, Plan
from runner.manifest.expand import ErrorBag, expand, name_key, odd_character
from runner.manifest.load import read_document
from runner.manifest.templates import TemplateFailure
from runner.manifest.validate import Manifest, locate_template, validate_document
from runner.media import OUTPUT_EXTS

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# the common case in one match: ASCII segments of 1..255 characters, none "." or ".."
_SAFE = re.compile(r"(?![A-Za-z]:)(?:(?!\.\.?/)[^/\\\x00-\x1f\x7f]{1,255}/)*"
                   r"(?!\.\.?$)[^/\\\x00-\x1f\x7f]{1,255}")


def unsafe_output_reason(name: str) -> str | None:
    """Why ``name`` cannot be a path under outputs/, or None when it is safe."""
    if name.isascii() and _SAFE.fullmatch(name):
        return None
    return _output_reason(name)


def _output_reason(name: str) -> str | None:
    if not name:
        return "it is empty"
    if "\\" in name:
        return "it contains a backslash (use '/' between folders)"
    if name.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    if _CONTROL.search(name):
        return "it contains a control character"
    odd = odd_character(name)  # direction overrides can make 'gnp.exe' read 'exe.png'
    if odd is not None:
        return f"it contains {odd}"
    for segment in name.split("/"):
        if segment == "":
            return "it has an empty path segment ('//' or a trailing '/')"
        if segment == "..":
            return "it has a '..' segment"
        if segment == ".":
            return "it has a '.' segment"
        if len(segment.encode("utf-8")) > 255:
            return "a path segment is longer than 255 bytes"
    return None


class _OutputProblem(Exception):
    def __init__(self, parts: Any, message: str, failure: TemplateFailure | None = None):
        super().__init__(message)
        self.parts = parts
        self.message = message
        self.failure = failure


class OutputNamer:
    """Renders ``output.filename`` for (job, image index, extension): a safe relative path.

    Raises :class:`~runner.errors.ManifestError` (located at ``output.filename``, or at the
    prompt that failed) for a name that fails to render or would leave outputs/."""

    def __init__(self, manifest: Manifest) -> None:
        self.m = manifest
        self.t = manifest.output.template
        self.parts = manifest.output.parts
        self.refs = self.t.refs
        # id(job) → (job, its first output name): checking the names renders each job's
        # first one, which `plan --json`, the tables and the run ask for again
        self._first: dict[int, tuple[Job, str]] = {}

    def context(self, job: Job, image_index: int, ext: str) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        m = self.m
        for name in self.refs:
            if name == "job":
                ctx["job"] = {"name": job.name, "key": job.key, "alias": job.alias,
                              "model": job.model, "provider": job.provider,
                              "index": job.index}
            elif name == "image":
                ctx["image"] = {"index": image_index, "ext": ext}
            elif name == "model":
                ctx["model"] = {"alias": job.alias, "id": job.model, "provider": job.provider}
            elif name == "index":
                ctx["index"] = job.index
            elif name in job.axes:
                ctx[name] = job.axes[name]
            elif name in m.vars:
                ctx[name] = m.vars[name]
        if "prompts" in self.refs:
            ctx["prompts"] = self._prompts(job, self.t.prompt_refs)
        return ctx

    def _prompts(self, job: Job, wanted: frozenset[str] | None) -> dict[str, str]:
        names = list(self.m.prompts)
        if wanted is not None:  # prompts only use earlier ones: render up to the last wanted
            last = max((names.index(n) for n in wanted if n in names), default=-1)
            names = names[: last + 1]
        base: dict[str, Any] = {**self.m.vars, **job.axes, "index": job.index,
                                "model": {"alias": job.alias, "id": job.model,
                                          "provider": job.provider}}
        done: dict[str, str] = {}
        for pname in names:
            pt = self.m.prompts[pname]
            base["prompts"] = dict(done)
            try:
                done[pname] = pt.template.render(base)
            except TemplateFailure as failure:
                raise _OutputProblem(pt.parts, failure.message, failure) from None
        return done

    def name(self, job: Job, image_index: int, ext: str) -> str:
        first = image_index == 0 and ext == "png"
        if first and (known := self._first.get(id(job))) is not None and known[0] is job:
            return known[1]
        try:
            text = str(self.t.render(self.context(job, image_index, ext)))
        except TemplateFailure as failure:
            raise _OutputProblem(self.parts, failure.message, failure) from None
        reason = unsafe_output_reason(text)
        if reason is not None:
            raise _OutputProblem(self.parts, f"output file name {text!r} would escape or "
                                 f"break the outputs folder: {reason}")
        if first:
            self._first[id(job)] = (job, text)
        return text

    def __call__(self, job: Job, image_index: int, ext: str) -> str:
        try:
            return self.name(job, image_index, ext)
        except _OutputProblem as problem:
            suffix = f" [job {job.name!r}]"
            if problem.failure is not None:
                raise locate_template(self.m.doc, problem.parts, problem.failure,
                                      suffix) from None
            raise self.m.doc.error(problem.message + suffix, problem.parts) from None


def _check_outputs(manifest: Manifest, jobs: list[Job],
                   namer: OutputNamer) -> list[ManifestError]:
    bag = ErrorBag(manifest)
    seen: dict[str, Job] = {}  # path, folded when it has capitals or non-ASCII → first job
    multi = None
    # Substituting an image number and extension cannot change the shape of a name, but
    # template logic can ('..' for the second image): then every image and extension is tried.
    thorough = "image" in namer.refs and not namer.t.plain
    for job in jobs:
        try:
            name = namer.name(job, 0, "png")
            if thorough:
                for index in range(max(1, job.estimate.images)):
                    for ext in OUTPUT_EXTS:
                        namer.name(job, index, ext)
        except _OutputProblem as problem:
            bag.add(problem.parts, problem.message, f"job {job.name!r}", problem.failure)
            continue
        # one file on macOS and Windows, whose file systems ignore case and Unicode form
        folded = name if name.isascii() and name.islower() else name_key(name).casefold()
        other = seen.get(folded)
        if other is None:
            seen[folded] = job
        elif (first := namer.name(other, 0, "png")) == name:
            bag.add(namer.parts, f"output.filename gives the same path {name!r} to more than "
                    f"one job (first {other.name!r}); include {{{{ job.name }}}} in it",
                    f"job {job.name!r}")
        else:
            bag.add(namer.parts, f"output.filename gives {first!r} (job {other.name!r}) and "
                    f"{name!r}, which differ only in letter case or Unicode form: one file on "
                    f"macOS and Windows; make the names differ by more than that",
                    f"job {job.name!r}")
        if multi is None and job.estimate.images > 1:
            multi = job
    errors = bag.errors()
    if multi is not None and "image" not in namer.refs:
        errors.append(manifest.doc.error(
            f"output.filename does not use {{{{ image.index }}}}, but job {multi.name!r} asks "
            f"for {multi.estimate.images} images: they would overwrite each other",
            namer.parts))
    return errors


def matrix_axes(data: Any) -> tuple[str, ...]:
    """Matrix variable names in the order a manifest's data writes them: the top-level
    matrix, then each job's; in a matrix its axes, then the keys its ``include`` adds."""
    names: list[str] = []

    def add(matrix: Any) -> None:
        if not isinstance(matrix, Mapping):
            return
        for name in matrix:
            if name not in ("include", "exclude") and str(name) not in names:
                names.append(str(name))
        include = matrix.get("include")
        for extra in include if isinstance(include, list) else []:
            if isinstance(extra, Mapping):
                for name in extra:
                    if str(name) not in names:
                        names.append(str(name))

    if not isinstance(data, Mapping):
        return ()
    add(data.get("matrix"))
    jobs = data.get("jobs")
    for job in jobs if isinstance(jobs, list) else []:
        if isinstance(job, Mapping):
            add(job.get("matrix"))
    return tuple(names)


def description_of(data: Any) -> str | None:
    """A manifest's ``description:``, when it has one that is text."""
    description = data.get("description") if isinstance(data, Mapping) else None
    return description if isinstance(description, str) else None


def load_manifest(path: str | Path, *, display: str | None = None) -> Manifest:
    """Read and validate the manifest at ``path``; raises :class:`ManifestErrors`."""
    doc = read_document(path, display=display)
    manifest, errors = validate_document(doc)
    if errors or manifest is None:
        raise ManifestErrors(errors)
    return manifest


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building 100,000 jobs allocates millions of
    objects and no reference cycles, and each full collection would walk them all again
    (a fifth of a large plan's time). Collection resumes, as it was, on the way out."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def plan_manifest(manifest: Manifest) -> tuple[Plan | None, list[ManifestError]]:
    """Expand a validated manifest; the Plan (None if any problem) and every problem."""
    with gc_paused():
        jobs, errors = expand(manifest)
        namer = OutputNamer(manifest)
        errors += _check_outputs(manifest, jobs, namer)
    errors += _check_store(manifest)
    if errors:
        return None, errors
    doc = manifest.doc
    plan = Plan(manifest_path=doc.path, manifest_bytes=doc.raw, name=manifest.name,
                jobs=tuple(jobs), limits=dict(manifest.limits), budget=manifest.budget,
                providers={k: dict(v) for k, v in manifest.providers.items()},
                axes=matrix_axes(doc.data), description=description_of(doc.data),
                output_namer=namer, store=store_of(doc.data, doc.path))
    return plan, []


def _check_store(manifest: Manifest) -> list[ManifestError]:
    """A ``store:`` URL never carries credentials (they would be in git and every run)."""
    data = manifest.doc.data
    store = data.get("store") if isinstance(data, dict) else None
    if not isinstance(store, str) or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", store):
        return []
    parts = urlsplit(store)
    if parts.username is None and parts.password is None:
        return []
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return [manifest.doc.error(
        f"store: {parts.scheme}://{host}{parts.path} is written with a user or password; "
        f"credentials never live in a manifest: remove them and give them to the backend "
        f"the usual way (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws; see "
        f"docs/store.md)", ("store",))]


def store_of(data: Any, manifest_path: Path) -> str | None:
    """The manifest's ``store:`` (the schema checked it is a string without credentials): a
    URL as written, a path made absolute against the manifest's folder."""
    store = data.get("store") if isinstance(data, dict) else None
    if not isinstance(store, str) or not store:
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", store):
        return store
    return str((Path(manifest_path).parent / Path(store).expanduser()).resolve())


_GLOBAL_SECTIONS = ("$.vars", "$.prompts", "$.models")


def check(path: str | Path, *, display: str | None = None) -> tuple[Plan | None,
                                                                      list[ManifestError]]:
    """Everything :func:`load_plan` checks, returning every problem instead of raising."""
    try:
        doc = read_document(path, display=display)
    except ManifestErrors as exc:
        return None, exc.problems
    manifest, errors = validate_document(doc)
    if manifest is None:
        return None, errors
    blocked = any(e.path == s or e.path.startswith((s + ".", s + "["))
                  for e in errors for s in _GLOBAL_SECTIONS[:2])
    if blocked:  # rendering with broken vars or prompts would only add noise
        return None, errors
    plan, more = plan_manifest(manifest)
    errors = errors + more
    return (plan if not errors else None), errors


def load_plan(path: str | Path, *, display: str | None = None) -> Plan:
    """The manifest at ``path`` as a Plan; raises :class:`ManifestErrors` with every problem."""
    plan, errors = check(path, display=display)
    if errors or plan is None:
        raise ManifestErrors(errors)
    return plan


# ── summaries ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ModelRow:
    """Jobs of one model: how many, how many images, estimated cost."""

    model: str
    provider: str
    aliases: tuple[str, ...]
    jobs: int
    images: int
    usd: float
    credits: float


def summarize(jobs: tuple[Job, ...] | list[Job]) -> list[ModelRow]:
    """Jobs grouped by model id, in order of first appearance."""
    acc: dict[str, list[Any]] = {}
    for job in jobs:
        row = acc.get(job.model)
        if row is None:
            row = acc[job.model] = [job.provider, {}, 0, 0, 0.0, 0.0]
        row[1][job.alias] = None
        row[2] += 1
        row[3] += job.estimate.images
        row[4] += job.estimate.usd
        row[5] += job.estimate.credits
    return [ModelRow(model, r[0], tuple(r[1]), r[2], r[3], round(r[4], 6), round(r[5], 6))
            for model, r in acc.items()]


def estimate_document(plan: Plan) -> dict[str, Any]:
    total = plan.estimate()
    budget = plan.budget
    doc: dict[str, Any] = {
        "jobs": len(plan.jobs),
        "images": total.images,
        "usd": round(total.usd, 6),
        "credits": round(total.credits, 6),
        "by_model": [
            {"model": r.model, "provider": r.provider, "aliases": list(r.aliases),
             "jobs": r.jobs, "images": r.images, "usd": r.usd, "credits": r.credits}
            for r in summarize(plan.jobs)],
        "budget": {"max_usd": budget.max_usd, "max_credits": budget.max_credits},
        "within_budget": ((budget.max_usd is None or total.usd <= budget.max_usd + 1e-9)
                          and (budget.max_credits is None
                               or total.credits <= budget.max_credits + 1e-9)),
    }
    return doc


def plan_document(plan: Plan, status: Mapping[str, str] | None = None, *,
                  with_jobs: bool = True) -> dict[str, Any]:
    """The ``seedbatch plan --json`` document: ``{"jobs": [...], "estimate": {...}}``.

    Each job is :func:`~runner.jobrecord.job_to_dict` plus its first output path and line;
    with ``status`` (job key → state) each job also gets ``"status"``. Without ``with_jobs``
    the list is left empty: :func:`plan_job_texts` gives its items as JSON text."""
    jobs = []
    with gc_paused():
        for job in plan.jobs if with_jobs else ():
            d = job_to_dict(job)
            d["output"] = plan.output_name(job, 0, "png")
            d["line"] = job.line
            if status is not None:
                d["status"] = status.get(job.key, "new")
            jobs.append(d)
    return {
        "name": plan.name,
        "manifest": str(plan.manifest_path),
        "manifest_sha256": plan.manifest_sha256,
        "jobs": jobs,
        "estimate": estimate_document(plan),
    }


_encode = json.JSONEncoder(ensure_ascii=False).encode  # what json.dumps(…, ensure_ascii=False) uses
_SCALARS = frozenset((str, int, bool, type(None)))


def _int_text(value: int) -> str:
    return int.__repr__(value) if type(value) is int else _encode(value)


def _flat_key(value: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key telling flat mappings apart exactly as their JSON does (True from 1, -0.0 from
    0.0: types and float bits count); None when a value is not a scalar."""
    key: list[Any] = []
    for k, v in value.items():
        t = type(v)
        if t is float:
            v = v.hex()
        elif t not in _SCALARS:
            return None
        key += k, t, v
    return tuple(key)


def plan_job_texts(plan: Plan, status: Mapping[str, str] | None = None,
                   more: Callable[[Job], Mapping[str, Any]] | None = None) -> Iterator[str]:
    """The items of ``plan_document(plan, status)["jobs"]``, each with ``more(job)``'s keys
    added after its own, as the exact text ``json.dumps(item, ensure_ascii=False)`` gives.

    A 100,000-job plan repeats few distinct aliases, models, prompts, parameter sets, axes,
    image lists and estimates: each of those is encoded once, and each job's text is put
    together from them (tests/manifest/test_expand.py compares it with json.dumps)."""
    by_value: dict[str, str] = {}  # alias, provider, model, prompt, status → their JSON
    by_object: dict[int, tuple[Any, str]] = {}  # id → (axes, images or estimate; JSON)
    by_key: dict[tuple[Any, ...], str] = {}  # _flat_key(params or more's) → JSON

    def text(value: str) -> str:
        found = by_value.get(value)
        if found is None:
            found = by_value[value] = encode_basestring(value)
        return found

    def shared(value: Any, make: Callable[[Any], Any]) -> str:
        found = by_object.get(id(value))
        if found is None or found[0] is not value:
            found = by_object[id(value)] = (value, _encode(make(value)))
        return found[1]

    def flat(value: Mapping[str, Any]) -> str:
        key = _flat_key(value)
        if key is None:
            return _encode(dict(value))
        found = by_key.get(key)
        if found is None:
            found = by_key[key] = _encode(dict(value))
        return found

    def images(value: tuple[ImageRef, ...]) -> list[dict[str, Any]]:
        return [image.to_dict() for image in value]

    def estimate(value: Estimate) -> dict[str, Any]:
        return {"images": value.images, "usd": value.usd, "credits": value.credits}

    for job in plan.jobs:
        parts = [
            '{"key": ', encode_basestring(job.key), ', "name": ', encode_basestring(job.name),
            ', "alias": ', text(job.alias), ', "provider": ', text(job.provider),
            ', "model": ', text(job.model), ', "prompt": ', text(job.prompt),
            ', "params": ', flat(job.params), ', "images": ', shared(job.images, images),
            ', "index": ', _int_text(job.index), ', "axes": ', shared(job.axes, dict),
            ', "estimate": ', shared(job.estimate, estimate),
            ', "output": ', encode_basestring(plan.output_name(job, 0, "png")),
            ', "line": ', _int_text(job.line)]
        if status is not None:
            parts += ', "status": ', text(status.get(job.key, "new"))
        if more is not None:
            extra = flat(more(job))
            if extra != "{}":
                parts += ", ", extra[1:-1]
        parts.append("}")
        yield "".join(parts)
