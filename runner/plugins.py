"""The provider registry: every :class:`~runner.spec.ProviderSpec` installed, by name.

Providers come from the entry-point group ``seedbatch.providers`` — seedbatch's own hosts
exactly like any installed plugin. An entry point names a ``ProviderSpec``, or a
callable returning one (or several). ``SEEDBATCH_PLUGINS=name,…`` loads only those entry
points (reproducible CI, tests), in the manner of llm's ``LLM_LOAD_PLUGINS``; an empty value
loads none. A plugin that fails to import, or names something that is not a provider, is
recorded in :attr:`Registry.problems` (shown once by the command line) and never takes the
program down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from runner.errors import ConfigError
from runner.spec import ModelSpec, ProviderSpec

GROUP = "seedbatch.providers"
PLUGINS_VAR = "SEEDBATCH_PLUGINS"

#: Model-id prefixes of providers seedbatch knows of but that may not be installed: the
#: package a user should install when a manifest names one of their models.
KNOWN_PACKAGES: Mapping[str, str] = {
    "demo": "seedbatch-demo (examples/plugins/seedbatch-demo in seedbatch's repository)",
}


@dataclass(frozen=True)
class Origin:
    """Which installed distribution registered a provider, and its version."""

    entry_point: str
    distribution: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"entry_point": self.entry_point, "distribution": self.distribution,
                "version": self.version}


@dataclass
class Registry:
    providers: dict[str, ProviderSpec] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one line per plugin that failed
    skipped: tuple[str, ...] = ()  # entry points present but not loaded (SEEDBATCH_PLUGINS)
    # every model by id, kept with ``providers`` (looked up on every submit): add providers
    # with :meth:`add`
    models: dict[str, ModelSpec] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.models = {m.id: m for spec in self.providers.values() for m in spec.models}

    def add(self, spec: ProviderSpec, origin: Origin) -> None:
        if spec.name in self.providers:
            self.problems.append(f"plugin {origin.entry_point}: provider {spec.name!r} is "
                                 f"already registered by "
                                 f"{self.origins[spec.name].entry_point}; ignored")
            return
        for model in spec.models:
            if model.provider != spec.name or not model.id.startswith(spec.name + "/"):
                self.problems.append(f"plugin {origin.entry_point}: model {model.id!r} must "
                                     f"belong to provider {spec.name!r} and be named "
                                     f"'{spec.name}/…'; provider ignored")
                return
        self.providers[spec.name] = spec
        self.models.update((m.id, m) for m in spec.models)
        self.origins[spec.name] = origin

    def provider(self, name: str) -> ProviderSpec:
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigError(missing_provider_message(name, self)) from None


def _specs_of(loaded: object) -> list[ProviderSpec]:
    if isinstance(loaded, ProviderSpec):
        return [loaded]
    if callable(loaded):
        got = loaded()
        if isinstance(got, ProviderSpec):
            return [got]
        if isinstance(got, Iterable) and not isinstance(got, str | bytes):
            items = list(got)
            if items and all(isinstance(i, ProviderSpec) for i in items):
                return items
    raise TypeError(f"{loaded!r} is not a ProviderSpec nor a function returning some")


def _origin(ep: EntryPoint) -> Origin:
    dist = getattr(ep, "dist", None)
    return Origin(f"{ep.name} = {ep.value}", getattr(dist, "name", None),
                  getattr(dist, "version", None))


def build_registry(points: Iterable[EntryPoint], only: str | None = None) -> Registry:
    """A registry from entry points; ``only`` is a ``SEEDBATCH_PLUGINS`` value."""
    wanted = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
    registry = Registry()
    skipped = []
    seen: set[str] = set()
    for ep in sorted(points, key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        if wanted is not None and ep.name not in wanted:
            skipped.append(ep.name)
            continue
        try:
            specs = _specs_of(ep.load())
        except Exception as exc:  # a broken plugin is reported, never fatal
            registry.problems.append(f"plugin {ep.name!r} ({ep.value}) could not be loaded: "
                                     f"{type(exc).__name__}: {exc}")
            continue
        for spec in specs:
            registry.add(spec, _origin(ep))
    registry.skipped = tuple(skipped)
    return registry


_cache: dict[str | None, Registry] = {}


def registry(env: Mapping[str, str] | None = None) -> Registry:
    """The providers installed (and allowed by ``SEEDBATCH_PLUGINS``), loaded once per
    value of that variable."""
    only = (os.environ if env is None else env).get(PLUGINS_VAR)
    if only not in _cache:
        _cache[only] = build_registry(entry_points(group=GROUP), only)
    return _cache[only]


def clear_cache() -> None:
    """Forget loaded registries (tests that install or fake plugins)."""
    _cache.clear()


def missing_provider_message(name: str, reg: Registry | None = None) -> str:
    """Why provider ``name`` is not available, and what to do."""
    reg = reg or registry()
    if name in reg.skipped:
        return (f"provider {name!r} is installed but not loaded: {PLUGINS_VAR} is set and "
                f"does not name it")
    known = ", ".join(sorted(reg.providers)) or "none"
    hint = KNOWN_PACKAGES.get(name)
    install = (f"install {hint}" if hint else
               f"install the plugin that provides it (a package registering the entry point "
               f"group {GROUP!r})")
    return f"no installed provider {name!r} (installed: {known}); {install}"


def provider_of_model(model_id: str) -> str:
    """The provider part of a model id: ``"acme/fast-v1"`` → ``"acme"``."""
    return model_id.split("/", 1)[0] if "/" in model_id else ""


ProviderLookup = Callable[[str], ProviderSpec]
