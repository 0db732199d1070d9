"""seedbatch-demo: Demo Images, a fictional asynchronous image API, as a seedbatch provider.

Installing this package is the whole registration: its ``pyproject.toml`` names
:data:`SPEC` under the entry-point group ``seedbatch.providers``, and seedbatch then knows
the models ``demo/pattern-v1`` and ``demo/pattern-hd-v1``, reads ``DEMO_API_KEY`` and
``DEMO_BASE_URL``, and serves this API in its emulator (``--emulate``). Nothing inside
seedbatch names this package.

The client (:mod:`seedbatch_demo.client`) and the emulator's routes
(:mod:`seedbatch_demo.emulator`) are imported only when first used, so listing models stays
cheap. The wire format is in this package's README.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runner.jobs import Limits
from runner.spec import EmulatorSpec, ProviderSpec
from seedbatch_demo.models import MODELS, NAME

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

__version__ = "0.1.0"

#: What the emulator accepts (and ``--emulate`` sends) when DEMO_API_KEY is unset.
DEMO_KEY = "demo-key"


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from seedbatch_demo.client import DemoProvider

    return DemoProvider(base_url=settings.base_url, api_key=settings.api_key,
                        transport=transport, timeout=timeout, concurrency=concurrency)


def emulator_routes(kit: Any) -> Sequence[Any]:
    from seedbatch_demo.emulator import routes

    return routes(kit)


SPEC = ProviderSpec(
    name=NAME,
    title="Demo Images",
    models=MODELS,
    credentials=("DEMO_API_KEY",),
    base_url_var="DEMO_BASE_URL",
    default_base_url="https://api.demo-images.invalid/v1",
    client=client,
    default_limits=Limits(concurrency=4, requests_per_minute=300.0),
    can_cancel=True,  # POST /v1/images/{id}/cancel stops a queued or running image job
    push_completion=False,  # polled: GET /v1/images/{id}
    initial_latency=2.0,
    emulator=EmulatorSpec(path="/demo/v1", routes=emulator_routes,
                          credentials={"DEMO_API_KEY": DEMO_KEY}),
    docs="examples/plugins/seedbatch-demo/README.md in seedbatch's repository",
)

__all__ = ["DEMO_KEY", "MODELS", "SPEC", "__version__"]
