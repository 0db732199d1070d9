"""Wiro (https://wiro.ai): ByteDance Seedream 3.0, 4.0 and 4.5."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.jobs import Limits, Price
from runner.spec import EmulatorSpec, ModelSpec, ProviderSpec

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "wiro"

# List prices: BytePlus's official Seedream prices (4.5 $0.04, 4.0 $0.03 per image; 3.0 $0.03
# from a third-party source). Manifests override them with `price:`; Wiro's reported
# `totalcost` always wins in reports.
MODELS = (
    ModelSpec("wiro/seedream-v4-5", NAME, "bytedance/seedream-v4-5",
              "ByteDance Seedream 4.5 on Wiro", "wiro-seedream-v4-5.json",
              Price(usd_per_image=0.04), "BytePlus list price", "maxImages"),
    ModelSpec("wiro/seedream-v4", NAME, "bytedance/seedream-v4",
              "ByteDance Seedream 4.0 on Wiro", "wiro-seedream-v4.json",
              Price(usd_per_image=0.03), "BytePlus list price", "maxImages"),
    ModelSpec("wiro/seedream-v3", NAME, "bytedance/text-to-image-seedream-v3",
              "ByteDance Seedream 3.0 text-to-image on Wiro", "wiro-seedream-v3.json",
              Price(usd_per_image=0.03), "third-party list price", None),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.wiro import WiroProvider

    return WiroProvider(base_url=settings.base_url, api_key=settings.api_key,
                        api_secret=settings.api_secret, transport=transport, timeout=timeout,
                        concurrency=concurrency)


def emulator_routes(kit: Any) -> Sequence[Any]:
    from runner.emulator.wiro import routes

    return routes(kit)


def emulator_state(context: Any) -> Any:
    from runner.emulator.wiro import make_state

    return make_state(context)


def emulator_errors(status: int, message: str, headers: Mapping[str, str] | None) -> Any:
    from runner.emulator.wiro import error_response

    return error_response(status, message, headers)


SPEC = ProviderSpec(
    name=NAME,
    title="Wiro",
    models=MODELS,
    credentials=("WIRO_API_KEY", "WIRO_API_SECRET"),
    base_url_var="WIRO_BASE_URL",
    default_base_url="https://api.wiro.ai/v1",
    client=client,
    default_limits=Limits(concurrency=4, requests_per_minute=600.0),
    can_cancel=True,  # Task/Cancel for queued tasks, Task/Kill for running ones
    push_completion=True,  # a websocket (wss://socket.wiro.ai/v1); polled today
    initial_latency=1.0,
    emulator=EmulatorSpec(path="/wiro/v1", routes=emulator_routes,
                          credentials={"WIRO_API_KEY": "demo-wiro-key",
                                       "WIRO_API_SECRET": "demo-wiro-secret"},
                          # the account's balance: below price × maxImages a Run answers 97
                          options={"balance_usd": 1000.0},
                          make_state=emulator_state, errors=emulator_errors,
                          task_faults=("task_error", "fail")),
)
