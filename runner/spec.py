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

    def images_per_job(self, params: Mapping[str, Any]) -> int:
        """How many images a job asks for at most (what estimates are based on)."""
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
        if "max_total_images" in lim and self.outputs_param:
            outputs = self.images_per_job(params)
            if n_images + outputs > lim["max_total_images"]:
                problems.append((f"params.{self.outputs_param}", f"{self.id}: reference images "
                                 f"({n_images}) + {self.outputs_param} ({outputs}) must be ≤ "
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
    initial_latency: float = 1.0  # seconds: the first poll's guess before anything is learnt
    emulator: EmulatorSpec | None = None
    docs: str = ""  # where the host's API is documented

    def make_client(self, settings: ProviderSettings, *,
                    transport: httpx.AsyncBaseTransport | None = None,
                    timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
        return self.client(settings, transport=transport, timeout=timeout,
                           concurrency=concurrency)
