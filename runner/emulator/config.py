"""The emulator's settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from runner.config import demo_credentials
from runner.emulator.faults import FaultSpec

ImageSize = Literal["small", "full"]


def _env_or_demo(var: str) -> str:
    return os.environ.get(var) or demo_credentials()[var]


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated Wiro and Pixwith accounts behave.

    Credentials default to ``WIRO_API_KEY`` / ``WIRO_API_SECRET`` / ``PIXWITH_API_KEY`` from
    the environment at construction time, else the built-in demo credentials
    (``runner.config.demo_credentials()``): whatever a client under ``--emulate`` sends.
    """

    latency: float = 2.0  # seconds from submit to a terminal state
    jitter: float = 0.0  # ± fraction of latency, drawn per task
    concurrency: int = 8  # non-terminal tasks allowed per account (Wiro code 96 beyond)
    faults: FaultSpec = field(default_factory=FaultSpec)  # or a spec string: "429=0.1,…"
    image_size: ImageSize = "small"  # "small": ~256 px long side; "full": the requested size
    output_pad_bytes: int = 0  # pad each output PNG to at least this many bytes
    seed: int | None = None  # RNG seed for faults and latency jitter
    wiro_key: str = field(default_factory=lambda: _env_or_demo("WIRO_API_KEY"), repr=False)
    wiro_secret: str = field(default_factory=lambda: _env_or_demo("WIRO_API_SECRET"), repr=False)
    pixwith_key: str = field(default_factory=lambda: _env_or_demo("PIXWITH_API_KEY"), repr=False)
    wiro_balance_usd: float = 1000.0  # below price × maxImages a Run answers code 97
    pixwith_credits: int = 500  # starting Pixwith balance (6 credits per image)
    upload_ttl: float = 600.0  # Pixwith presigned upload lifetime, seconds
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
        if self.pixwith_credits < 0 or self.wiro_balance_usd < 0:
            raise ValueError("balances must be ≥ 0")
        if self.upload_ttl <= 0:
            raise ValueError(f"upload_ttl must be > 0 seconds, not {self.upload_ttl}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> EmulatorConfig:
        """A config whose credentials come from ``env`` (default: the process environment),
        else the demo credentials; keyword arguments override any field."""
        env = os.environ if env is None else env
        demo = demo_credentials()
        creds: dict[str, Any] = {
            "wiro_key": env.get("WIRO_API_KEY") or demo["WIRO_API_KEY"],
            "wiro_secret": env.get("WIRO_API_SECRET") or demo["WIRO_API_SECRET"],
            "pixwith_key": env.get("PIXWITH_API_KEY") or demo["PIXWITH_API_KEY"],
        }
        creds.update(overrides)
        return cls(**creds)

    def with_faults(self, faults: FaultSpec | str) -> EmulatorConfig:
        spec = FaultSpec.parse(faults) if isinstance(faults, str) else faults
        return replace(self, faults=spec)

    def describe(self) -> dict[str, Any]:
        """The settings without credentials (for ``GET /__`` and the CLI banner)."""
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "concurrency": self.concurrency,
            "faults": str(self.faults),
            "image_size": self.image_size,
            "output_pad_bytes": self.output_pad_bytes,
            "seed": self.seed,
            "wiro_balance_usd": self.wiro_balance_usd,
            "pixwith_credits": self.pixwith_credits,
            "upload_ttl": self.upload_ttl,
        }
