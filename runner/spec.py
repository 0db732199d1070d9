"""What a provider plugin declares: :class:`ProviderSpec`, its :class:`ModelSpec` models and,
optionally, its :class:`EmulatorSpec`.

A provider — built in or installed as a package — is one ``ProviderSpec`` named by an entry
point of the group ``seedbatch.providers`` (:mod:`runner.plugins` loads them)::

    [project.entry-points."seedbatch.providers"]
    acme = "seedbatch_acme:SPEC"          # a ProviderSpec, or a function returning one

Everything seedbatch knows about a host comes from here: the models with their parameter
schemas, limits, cross-field rules and list prices; the credential and base-URL
environment variables; default limits; capabilities; the client factory; the emulator's
routes. Nothing outside a provider's own files names a provider. Pure data: no I/O here
but reading a model's schema file on first use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from runner.jobs import Limits, Price
from runner.resources import load_schema

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

#: A model's own rules that JSON Schema cannot say: (final params, reference images) →
#: ``(json_path_suffix, message)`` problems, e.g. ``("params.width", "… too small")``.
ModelRule = Callable[["ModelSpec", Mapping[str, Any], int], list[tuple[str, str]]]

#: The portable settings a manifest may give beside ``params:``, in the order shown.
PORTABLE_SETTINGS: tuple[str, ...] = ("size", "count", "seed")


@dataclass(frozen=True)
class Portable:
    """A job's portable settings — the manifest's ``size: WxH``, ``count: N`` (images per
    job) and ``seed: N`` — before a model turns them into its own parameters. ``None``:
    not given."""

    size: tuple[int, int] | None = None
    count: int | None = None
    seed: int | None = None

    def given(self) -> tuple[str, ...]:
        return tuple(n for n in PORTABLE_SETTINGS if getattr(self, n) is not None)


#: What a model makes of portable settings: (model, settings, number of reference images) →
#: (its own parameters, problems). A problem is ``(setting, message)`` with ``setting`` one
#: of ``PORTABLE_SETTINGS``; a setting the model cannot honour exactly is a problem that says
#: what it can do ("… cannot make 2000x1000; nearest: …"), never a silent approximation.
#: Only the settings given are passed (the others are ``None``) and only they are translated.
PortableTranslator = Callable[["ModelSpec", Portable, int],
                              tuple[dict[str, Any], list[tuple[str, str]]]]


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def nearest_sizes(want: tuple[int, int], choices: Mapping[str, tuple[int, int]],
                  k: int = 3) -> list[str]:
    """The ``k`` labels of ``choices`` (label → width, height) closest to ``want``: nearest
    aspect ratio first, then nearest pixel count — for "cannot make …; nearest: …"."""
    w, h = want

    def distance(item: tuple[str, tuple[int, int]]) -> tuple[float, float]:
        cw, ch = item[1]
        return (round(abs(math.log((cw / ch) / (w / h))), 3), abs(math.log((cw * ch) / (w * h))))

    return [f"{label} ({size_label(size)})" if label != size_label(size) else label
            for label, size in sorted(choices.items(), key=distance)[:k]]


def free_size_problem(model: ModelSpec, size: tuple[int, int], *, min_side: int = 1,
                      max_side: int | None = None, min_pixels: int = 1,
                      max_pixels: int | None = None, max_aspect: float | None = None,
                      multiple: int = 1) -> str | None:
    """Why a model that takes any ``WxH`` within bounds cannot make ``size`` (None: it can).
    The message names the bounds and the nearest size the model can make."""
    w, h = size
    lo_px, hi_px = min_pixels, max_pixels if max_pixels is not None else 1 << 62
    hi_side = max_side if max_side is not None else 1 << 31
    bad: list[str] = []
    if not min_side <= w <= hi_side or not min_side <= h <= hi_side:
        bad.append(f"each side must be {min_side}–{hi_side}" if max_side else
                   f"each side must be at least {min_side}")
    if not lo_px <= w * h <= hi_px:
        bad.append(f"width × height must be {lo_px:,}–{hi_px:,} pixels" if max_pixels else
                   f"width × height must be at least {lo_px:,} pixels")
    if max_aspect is not None and not 1 / max_aspect <= w / h <= max_aspect:
        bad.append(f"the aspect ratio must be between 1:{max_aspect:g} and {max_aspect:g}:1")
    if multiple > 1 and (w % multiple or h % multiple):
        bad.append(f"each side must be a multiple of {multiple}")
    if not bad:
        return None
    # the nearest size it can make: same aspect ratio, scaled into the pixel range, clamped
    scale = 1.0
    if w * h < lo_px:
        scale = math.sqrt(lo_px / (w * h))
    elif w * h > hi_px:
        scale = math.sqrt(hi_px / (w * h))
    nw, nh = w * scale, h * scale
    if max_aspect is not None:
        ratio = min(max(nw / nh, 1 / max_aspect), max_aspect)
        area = nw * nh
        nw, nh = math.sqrt(area * ratio), math.sqrt(area / ratio)
    step = max(multiple, 1)
    nw = min(max(math.ceil(nw / step) * step, min_side), hi_side)
    nh = min(max(math.ceil(nh / step) * step, min_side), hi_side)
    while nw * nh > hi_px and nw > min_side and nh > min_side:
        nw, nh = nw - step, nh - step
    return (f"{model.id} cannot make {size_label(size)}: {'; '.join(bad)}; nearest: "
            f"{nw}x{nh}")


@dataclass(frozen=True)
class ModelSpec:
    """One model a provider serves.

    ``schema`` is the JSON Schema (2020-12) of its parameters — a dict, or the path of a JSON
    file (a bare file name is looked up in seedbatch's own ``schemas/models/``). Its
    ``x-seedbatch`` object holds limits: ``max_input_images``, ``max_total_images``,
    ``min_pixels``/``max_pixels`` (with an optional ``pixels_hint`` shown in the error),
    ``max_aspect`` (checked by :meth:`check`); ``rules`` adds
    checks of the plugin's own."""

    id: str  # "<provider>/<model>", e.g. "acme/fast-v1"
    provider: str
    endpoint: str  # what the provider's API calls this model (a path, a model id, …)
    title: str
    schema_source: Mapping[str, Any] | str | Path
    # list price for estimates; what the provider reports wins
    price: Price = field(default_factory=Price)
    price_source: str = ""
    outputs_param: str | None = None  # the parameter that sets how many images come back
    rules: Sequence[ModelRule] = ()
    # portable settings (size / count / seed): the translator, and what each setting it
    # supports can do, in words (``seedbatch models``); a setting absent here is refused
    portable: PortableTranslator | None = None
    portable_support: Mapping[str, str] = field(default_factory=dict)
    # how many images final params ask for at most, when one parameter cannot say it
    # (e.g. num_images × max_images); default: the value of ``outputs_param``
    count_outputs: Callable[[Mapping[str, Any]], int] | None = None

    @cached_property
    def schema(self) -> dict[str, Any]:
        source = self.schema_source
        if isinstance(source, Mapping):
            return dict(source)
        path = Path(source)
        if path.is_absolute():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
        return load_schema(f"models/{source}")

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)

    @property
    def limits(self) -> dict[str, Any]:
        return dict(self.schema.get("x-seedbatch", {}))

    @property
    def max_input_images(self) -> int:
        return int(self.limits.get("max_input_images", 0))

    @cached_property
    def defaults(self) -> dict[str, Any]:
        return {name: prop["default"] for name, prop in self.schema["properties"].items()
                if "default" in prop}

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Final parameters: every documented default made explicit, then ``params`` on top."""
        merged = dict(self.defaults)
        merged.update(params)
        return merged

    def translate(self, settings: Portable, n_images: int
                  ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """This model's own parameters for portable ``settings`` (and ``n_images`` reference
        images), and the problems: ``(setting, message)``. Settings the model does not
        support are problems naming those it does."""
        given = settings.given()
        if not given:
            return {}, []
        unsupported = [n for n in given
                       if self.portable is None or n not in self.portable_support]
        if unsupported:
            can = ", ".join(n for n in PORTABLE_SETTINGS if n in self.portable_support
                            and self.portable is not None)
            does = f"it supports: {can}" if can else "it supports none of size, count, seed"
            return {}, [(n, f"{self.id} has no portable {n!r} setting ({does}); set its own "
                         f"parameter under params: instead") for n in unsupported]
        assert self.portable is not None
        return self.portable(self, settings, n_images)

    def images_per_job(self, params: Mapping[str, Any]) -> int:
        """How many images a job asks for at most (what estimates are based on)."""
        if self.count_outputs is not None:
            return max(1, int(self.count_outputs(self.with_defaults(params))))
        if self.outputs_param is None:
            return 1
        value = params.get(self.outputs_param, self.defaults.get(self.outputs_param, 1))
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
            else 1

    def check(self, params: Mapping[str, Any], n_images: int) -> list[tuple[str, str]]:
        """Every problem with final ``params`` and ``n_images`` reference images.

        Returns ``(json_path_suffix, message)`` pairs; the suffix is relative to the job
        (``params.width``, ``images``)."""
        problems: list[tuple[str, str]] = []
        for err in sorted(self.validator.iter_errors(dict(params)), key=lambda e: list(e.path)):
            where = "params" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]"
                                       for p in err.absolute_path)
            if err.validator == "additionalProperties":
                known = ", ".join(sorted(self.schema["properties"]))
                extra = sorted(set(err.instance) - set(self.schema["properties"]))
                for name in extra:
                    problems.append((f"params.{name}", f"{self.id} has no parameter "
                                     f"{name!r}; it takes: {known}"))
                continue
            problems.append((where, f"{self.id}: {err.message}"))
        if problems:
            return problems
        lim = self.limits
        if n_images > self.max_input_images:
            if self.max_input_images == 0:
                problems.append(("images", f"{self.id} is text-to-image only and takes no "
                                 f"reference images ({n_images} given)"))
            else:
                problems.append(("images", f"{self.id} takes at most {self.max_input_images} "
                                 f"reference images ({n_images} given)"))
        if "max_total_images" in lim and (self.outputs_param or self.count_outputs):
            outputs = self.images_per_job(params)
            if n_images + outputs > lim["max_total_images"]:
                label = self.outputs_param or "outputs"
                problems.append((f"params.{label}", f"{self.id}: reference images "
                                 f"({n_images}) + {label} ({outputs}) must be ≤ "
                                 f"{lim['max_total_images']}"))
        if "min_pixels" in lim:
            w, h = params.get("width"), params.get("height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                px = w * h
                if not lim["min_pixels"] <= px <= lim["max_pixels"]:
                    hint = f" ({lim['pixels_hint']})" if lim.get("pixels_hint") else ""
                    problems.append(("params.width", f"{self.id}: width × height = {w}×{h} = "
                                     f"{px:,} pixels; it must be between {lim['min_pixels']:,} "
                                     f"and {lim['max_pixels']:,}{hint}"))
                ratio = w / h
                if not 1 / lim["max_aspect"] <= ratio <= lim["max_aspect"]:
                    problems.append(("params.height", f"{self.id}: aspect ratio {w}:{h} is "
                                     f"outside 1/{lim['max_aspect']}..{lim['max_aspect']}"))
        for rule in self.rules:
            problems.extend(rule(self, params, n_images))
        return problems


#: The client factory: (settings, transport, timeout, concurrency) → a Provider.
ClientFactory = Callable[..., "Provider"]


#: What a host's emulated task may be made to do instead of succeeding: ``"fail"`` (it runs,
#: then ends failed) and ``"task_error"`` (it stops before its model runs).
TASK_FAULTS: tuple[str, ...] = ("task_error", "fail")


@dataclass(frozen=True)
class EmulatorSpec:
    """A provider's part of the emulator (``seedbatch emulate``, ``run --emulate``): where
    its API lives under the emulator's root, the Starlette routes that serve it, and the
    account behind them. docs/plugins.md ("Emulator routes") walks through one.

    ``routes(kit)`` returns the routes. ``kit.api(handler, label=None)`` wraps a handler
    ``async (request, state) -> Response`` with the emulator's shared fault injection and
    counters (429 / 5xx / drops / slow answers, ``/__stats``), ``kit.upload(handler,
    label)`` an upload target, so a plugin's emulator meets the same chaos as the built-ins.
    ``state`` is the emulator's shared memory (``runner.emulator.state.EmulatorState``:
    tasks, files, counters, the clock); ``state.part(name)`` is this provider's own.

    ``make_state(context)`` makes that part when the emulator starts and on ``/__reset``: a
    ``runner.emulator.state.ProviderState`` (the default: no balance, list prices billed)
    or a subclass holding the account's balance, id counters, tokens, nonces, pending
    uploads. ``context`` carries the ``options`` (``options`` below, overridden by
    ``EmulatorConfig(options={name: {...}})`` or ``seedbatch emulate --set name.option=v``)
    and the ``credentials`` the emulator accepts.

    ``credentials`` are the demo values it accepts for the provider's credential variables
    (what ``--emulate`` sends when the variables are unset); a variable set in the
    environment wins. ``options`` names each option the provider's emulator takes, with its
    default (its type is the option's type). ``errors(status, message, headers)`` renders a
    429 or 500 that the shared fault injection answers in the host's own error envelope
    (default: plain text). ``task_faults`` are the task fates of ``TASK_FAULTS`` the host
    knows (drawn from the ``--faults`` rates and asked for by the prompt markers
    ``emulator:fail`` / ``emulator:task_error``); a host without a pre-execution failure
    state keeps the default ``("fail",)``."""

    path: str  # e.g. "/acme/v1": the provider's base URL is the emulator's root + this
    routes: Callable[[Any], Sequence[Any]]  # (kit) -> Starlette routes
    credentials: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # option -> default
    make_state: Callable[[Any], Any] | None = None  # (ProviderContext) -> ProviderState
    errors: Callable[[int, str, Mapping[str, str] | None], Any] | None = None  # -> Response
    task_faults: tuple[str, ...] = ("fail",)
    push_path: str | None = None  # where its push channel (a websocket) lives, if any

    def __post_init__(self) -> None:
        unknown = [f for f in self.task_faults if f not in TASK_FAULTS]
        if unknown:
            raise ValueError(f"unknown task fault {unknown[0]!r}; known: "
                             f"{', '.join(TASK_FAULTS)}")
        for name in self.options:
            if not name.isidentifier():
                raise ValueError(f"emulator option {name!r} is not an identifier")


@dataclass(frozen=True)
class ProviderSpec:
    """One provider (a host), as a plugin registers it."""

    name: str  # lower-case, the prefix of its model ids
    title: str
    models: tuple[ModelSpec, ...]
    credentials: tuple[str, ...]  # environment variables, e.g. ("ACME_API_KEY",)
    base_url_var: str  # e.g. "ACME_BASE_URL"
    default_base_url: str
    client: ClientFactory
    default_limits: Limits = field(
        default_factory=lambda: Limits(concurrency=4, requests_per_minute=600.0))
    can_cancel: bool = True  # False: tasks run to their end once submitted (and are billed)
    push_completion: bool = False  # the host can push completion (else it is polled)
    # where completion is pushed from (push_completion hosts): the variable that overrides
    # it, and the public address used with the public base URL
    push_url_var: str | None = None
    default_push_url: str | None = None
    # a submit holds the call until the task ends and answers with its end
    # (``SubmitResult.final``): there is no task to poll, and a lost answer loses the outputs
    synchronous: bool = False
    initial_latency: float = 1.0  # seconds: the first poll's guess before anything is learnt
    emulator: EmulatorSpec | None = None
    docs: str = ""  # where the host's API is documented

    def make_client(self, settings: ProviderSettings, *,
                    transport: httpx.AsyncBaseTransport | None = None,
                    timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
        return self.client(settings, transport=transport, timeout=timeout,
                           concurrency=concurrency)
