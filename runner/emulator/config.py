"""The emulator's settings: the shared ones, each provider's options and the credentials
its emulated accounts accept."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from runner.config import demo_credentials
from runner.emulator.faults import FaultSpec
from runner.plugins import registry
from runner.spec import ProviderSpec

ImageSize = Literal["small", "full"]
#: Provider name → option name → value (``EmulatorConfig.options``).
Options = Mapping[str, Mapping[str, Any]]


def resolve_credentials(env: Mapping[str, str],
                        specs: Iterable[ProviderSpec] | None = None) -> dict[str, str]:
    """The value each emulated provider's credential variable is accepted with: the one in
    ``env``, else the provider's demo value (``EmulatorSpec.credentials``). ``specs``: the
    providers (default: every installed one that ships an emulator)."""
    if specs is None:
        specs = registry().providers.values()
        demo = demo_credentials()
    else:
        specs = list(specs)
        demo = {var: value for spec in specs if spec.emulator is not None
                for var, value in spec.emulator.credentials.items()}
    return {var: env.get(var) or demo.get(var, "")
            for spec in specs if spec.emulator is not None for var in spec.credentials}


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated accounts behave.

    The shared settings are fields. What belongs to one provider's emulator is in
    ``options``, by provider then option: ``options={"acme": {"balance": 20}}``; each
    provider declares its options and their defaults (``EmulatorSpec.options``, listed by
    docs/emulator.md), and an option it does not declare is refused when the emulator
    starts.

    ``credentials`` maps credential variables (``ProviderSpec.credentials``) to the value
    the emulator accepts. Those not given come from the environment at construction time,
    else the provider's demo value (``EmulatorSpec.credentials``): whatever a client under
    ``--emulate`` sends. ``EmulatorConfig(credentials=runner.config.demo_credentials())``
    ignores the environment.
    """

    latency: float = 2.0  # seconds from submit to a terminal state
    jitter: float = 0.0  # ± fraction of latency, drawn per task
    concurrency: int = 8  # non-terminal tasks allowed per account (beyond: a refusal)
    faults: FaultSpec = field(default_factory=FaultSpec)  # or a spec string: "429=0.1,…"
    image_size: ImageSize = "small"  # "small": ~256 px long side; "full": the requested size
    output_pad_bytes: int = 0  # pad each output PNG to at least this many bytes
    seed: int | None = None  # RNG seed for faults and latency jitter
    # Render each output halfway through its task (as a host renders while its task runs)
    # rather than at its first download: a batch's downloads are then served at once.
    render_ahead: bool = False
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: Options = field(default_factory=dict)  # provider → option → value
    # False: the index (GET / and /__) answers 404 as a vendor's API would, so a client
    # cannot tell this emulator from the real host — it stands in for a real endpoint in
    # tests of what real runs do (reuse, lockfile). Never for users' rehearsals.
    identify: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.faults, str):  # a spec string is accepted for convenience
            object.__setattr__(self, "faults", FaultSpec.parse(self.faults))
        if self.latency < 0:
            raise ValueError(f"latency must be ≥ 0 seconds, not {self.latency}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, not {self.jitter}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be ≥ 1, not {self.concurrency}")
        if self.image_size not in ("small", "full"):
            raise ValueError(f"image_size must be 'small' or 'full', not {self.image_size!r}")
        if self.output_pad_bytes < 0:
            raise ValueError(f"output_pad_bytes must be ≥ 0, not {self.output_pad_bytes}")
        for provider, values in self.options.items():
            if not isinstance(values, Mapping):
                raise ValueError(f"options[{provider!r}] must be a mapping of option names "
                                 f"to values, not {values!r}")
        object.__setattr__(self, "options",
                           {p: dict(values) for p, values in self.options.items()})
        object.__setattr__(self, "credentials",
                           {**resolve_credentials(os.environ), **self.credentials})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> EmulatorConfig:
        """A config whose credentials come from ``env`` (default: the process environment),
        else the demo credentials; keyword arguments override any field (``credentials``
        given are laid over those)."""
        env = os.environ if env is None else env
        creds = {**resolve_credentials(env), **overrides.pop("credentials", {})}
        return cls(credentials=creds, **overrides)

    def credential(self, var: str, demo: str = "") -> str:
        """The value credential variable ``var`` is accepted with: given, else from the
        environment, else ``demo``."""
        return self.credentials.get(var) or os.environ.get(var) or demo

    def with_faults(self, faults: FaultSpec | str) -> EmulatorConfig:
        spec = FaultSpec.parse(faults) if isinstance(faults, str) else faults
        return replace(self, faults=spec)

    def with_options(self, options: Options) -> EmulatorConfig:
        """This config with ``options`` laid over its own, option by option."""
        merged = {p: dict(values) for p, values in self.options.items()}
        for provider, values in options.items():
            merged.setdefault(provider, {}).update(values)
        return replace(self, options=merged)

    def describe(self) -> dict[str, Any]:
        """The settings without credentials (for ``GET /__`` and the CLI banner)."""
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "concurrency": self.concurrency,
            "faults": str(self.faults),
            "image_size": self.image_size,
            "output_pad_bytes": self.output_pad_bytes,
            "render_ahead": self.render_ahead,
            "seed": self.seed,
            "options": {p: dict(values) for p, values in self.options.items()},
        }


# --- provider options ---------------------------------------------------------------------
def _coerce(default: Any, value: Any, where: str) -> Any:
    """``value`` as the type of ``default``; a string (from the command line) is parsed."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on",
                                                                 "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{where} must be true or false, not {value!r}")
    if kind in (int, float):
        if isinstance(value, str):
            try:
                return kind(value.strip())
            except ValueError:
                raise ValueError(f"{where} must be {'an integer' if kind is int else 'a number'}"
                                 f", not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not float(value).is_integer()):
            raise ValueError(f"{where} must be {'an integer' if kind is int else 'a number'}, "
                             f"not {value!r}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, not {value!r}")
        return value
    return value


def provider_options(name: str, declared: Mapping[str, Any], given: Options) -> dict[str, Any]:
    """Provider ``name``'s options: ``declared`` (its ``EmulatorSpec.options``, the defaults)
    with what ``given`` sets for it, each as the type of its default."""
    values = dict(declared)
    for option, value in given.get(name, {}).items():
        if option not in declared:
            known = ", ".join(f"{name}.{o}" for o in declared) or "none"
            raise ValueError(f"the {name} emulator has no option {option!r} (its options: "
                             f"{known})")
        values[option] = _coerce(declared[option], value, f"{name}.{option}")
    return values


def check_options(given: Options, specs: Mapping[str, ProviderSpec]) -> None:
    """Refuse options for a provider that is not emulated, or that it does not declare."""
    for name in given:
        spec = specs.get(name)
        if spec is None or spec.emulator is None:
            known = ", ".join(sorted(specs)) or "none"
            raise ValueError(f"no emulated provider {name!r} to set options of (emulated: "
                             f"{known})")
        provider_options(name, spec.emulator.options, given)


def parse_setting(text: str) -> tuple[str, str, str]:
    """``"provider.option=value"`` (``seedbatch emulate --set``) → its three parts."""
    target, sep, value = text.partition("=")
    provider, dot, option = target.strip().partition(".")
    if not sep or not dot or not provider or not option:
        raise ValueError(f"{text!r} is not PROVIDER.OPTION=VALUE (example: "
                         f"--set acme.balance=100)")
    return provider, option.strip(), value.strip()
