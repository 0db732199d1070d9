"""Pixwith (https://pixwith.ai): ByteDance Seedream 4.5."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.jobs import Limits, Price
from runner.spec import EmulatorSpec, ModelSpec, ProviderSpec

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "pixwith"

# Pixwith's documented price: 6 credits per image.
MODELS = (
    ModelSpec("pixwith/seedream-4.5", NAME, "0-32", "ByteDance Seedream 4.5 on Pixwith",
              "pixwith-seedream-4.5.json", Price(credits_per_image=6), "Pixwith price table",
              "num_outputs"),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.pixwith import PixwithProvider

    return PixwithProvider(base_url=settings.base_url, api_key=settings.api_key,
                           transport=transport, timeout=timeout, concurrency=concurrency)


def emulator_routes(kit: Any) -> Sequence[Any]:
    from runner.emulator.pixwith import routes

    return routes(kit)


def emulator_state(context: Any) -> Any:
    from runner.emulator.pixwith import make_state

    return make_state(context)


def emulator_errors(status: int, message: str, headers: Mapping[str, str] | None) -> Any:
    from runner.emulator.pixwith import error_response

    return error_response(status, message, headers)


SPEC = ProviderSpec(
    name=NAME,
    title="Pixwith",
    models=MODELS,
    credentials=("PIXWITH_API_KEY",),
    base_url_var="PIXWITH_BASE_URL",
    default_base_url="https://api.pixwith.ai/api",
    client=client,
    default_limits=Limits(concurrency=4, requests_per_minute=600.0),
    can_cancel=False,  # no cancel call is documented: a task runs to its end, billed
    initial_latency=1.0,
    # Pixwith's documentation publishes this test key.
    emulator=EmulatorSpec(path="/pixwith/api", routes=emulator_routes,
                          credentials={"PIXWITH_API_KEY": "key_00000000000000000000000000000000"},
                          # starting credits (6 an image); presigned uploads' lifetime, s
                          options={"credits": 500, "upload_ttl": 600.0},
                          make_state=emulator_state, errors=emulator_errors),
)
