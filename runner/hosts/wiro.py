"""Wiro (https://wiro.ai): ByteDance Seedream 3.0, 4.0 and 4.5."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.hosts import emulator_parts
from runner.jobs import Limits, Price
from runner.spec import (
    EmulatorSpec,
    ModelSpec,
    Portable,
    ProviderSpec,
    free_size_problem,
    nearest_sizes,
    size_label,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "wiro"

# Portable settings (size / count / seed) → each model's own parameters. Wiro passes what it
# is given to Seedream: v4 takes `size: "WxH"` (its page sets no bounds: the schema's 3–5
# digit sides), v4.5 `width`/`height` within the pixel range its page documents, v3 one of
# its eight listed sizes and a seed; v4 and v4.5 make up to `maxImages` images per task.
_V3_SIZES = {f"{w}x{h}": (w, h) for w, h in ((1024, 1024), (864, 1152), (1152, 864),
                                            (1280, 720), (720, 1280), (832, 1248),
                                            (1248, 832), (1512, 648))}


def _count(model: ModelSpec, count: int, param: str | None) -> tuple[dict[str, Any], str | None]:
    if param is None:
        if count == 1:
            return {}, None
        return {}, (f"{model.id} makes one image per job (count: {count}); use repeat: "
                    f"{count} for {count} samples")
    most = int(model.schema["properties"][param].get("maximum", count))
    if count > most:
        return {}, f"{model.id} makes at most {most} images per job (count: {count})"
    return {param: count}, None


def _portable(model: ModelSpec, settings: Portable, n_images: int
              ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if settings.size is not None:
        size = settings.size
        if model.id == "wiro/seedream-v3":
            label = size_label(size)
            if label in _V3_SIZES:
                params["size"] = label
            else:
                problems.append(("size", f"{model.id} cannot make {label}; it makes "
                                 f"{', '.join(_V3_SIZES)}; nearest: "
                                 f"{', '.join(nearest_sizes(size, _V3_SIZES))}"))
        elif "width" in model.schema["properties"]:  # v4.5
            lim = model.limits
            why = free_size_problem(model, size, min_side=480, max_side=16384,
                                    min_pixels=lim["min_pixels"], max_pixels=lim["max_pixels"],
                                    max_aspect=lim["max_aspect"])
            if why:
                problems.append(("size", why))
            else:
                params.update(width=size[0], height=size[1])
        else:  # v4
            why = free_size_problem(model, size, min_side=100, max_side=99999)
            if why:
                problems.append(("size", why))
            else:
                params["size"] = size_label(size)
    if settings.count is not None:
        got, why = _count(model, settings.count, model.outputs_param)
        params.update(got)
        if why:
            problems.append(("count", why))
    if settings.seed is not None:
        params["seed"] = settings.seed
    return params, problems


_SUPPORT_V4 = {"size": "any WxH (Wiro passes it to Seedream 4.0)",
               "count": "1–15 (maxImages: up to N images)"}
_SUPPORT_V45 = {"size": "WxH with 3,686,400–16,777,216 pixels, aspect 1:16–16:1 "
                        "(width/height)",
                "count": "1–15 (maxImages: up to N images)"}
_SUPPORT_V3 = {"size": ", ".join(_V3_SIZES), "count": "1 (one image per job)",
               "seed": "0 or more (seed)"}

# List prices: BytePlus's official Seedream prices (4.5 $0.04, 4.0 $0.03 per image; 3.0 $0.03
# from a third-party source). Manifests override them with `price:`; Wiro's reported
# `totalcost` always wins in reports.
MODELS = (
    ModelSpec("wiro/seedream-v4-5", NAME, "bytedance/seedream-v4-5",
              "ByteDance Seedream 4.5 on Wiro", "wiro-seedream-v4-5.json",
              Price(usd_per_image=0.04), "BytePlus list price", "maxImages",
              portable=_portable, portable_support=_SUPPORT_V45),
    ModelSpec("wiro/seedream-v4", NAME, "bytedance/seedream-v4",
              "ByteDance Seedream 4.0 on Wiro", "wiro-seedream-v4.json",
              Price(usd_per_image=0.03), "BytePlus list price", "maxImages",
              portable=_portable, portable_support=_SUPPORT_V4),
    ModelSpec("wiro/seedream-v3", NAME, "bytedance/text-to-image-seedream-v3",
              "ByteDance Seedream 3.0 text-to-image on Wiro", "wiro-seedream-v3.json",
              Price(usd_per_image=0.03), "third-party list price", None,
              portable=_portable, portable_support=_SUPPORT_V3),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.wiro import WiroProvider

    return WiroProvider(base_url=settings.base_url, api_key=settings.api_key,
                        api_secret=settings.api_secret, transport=transport, timeout=timeout,
                        concurrency=concurrency, socket_url=settings.push_url)


def _emulator() -> ModuleType:
    from runner.emulator import wiro

    return wiro


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
    push_completion=True,  # the websocket: task events pushed, completion confirmed by a poll
    push_url_var="WIRO_SOCKET_URL",
    default_push_url="wss://socket.wiro.ai/v1",
    initial_latency=1.0,
    emulator=EmulatorSpec(path="/wiro/v1", **emulator_parts(_emulator),
                          credentials={"WIRO_API_KEY": "demo-wiro-key",
                                       "WIRO_API_SECRET": "demo-wiro-secret"},
                          # the account's balance: below price × maxImages a Run answers 97
                          options={"balance_usd": 1000.0},
                          task_faults=("task_error", "fail"), push_path="/wiro/socket/v1"),
)
