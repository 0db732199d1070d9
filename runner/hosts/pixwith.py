"""Pixwith (https://pixwith.ai): ByteDance Seedream 4.5."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.hosts import emulator_parts
from runner.jobs import Limits, Price
from runner.spec import EmulatorSpec, ModelSpec, Portable, ProviderSpec, nearest_sizes, size_label

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "pixwith"

# Portable size: Pixwith takes a resolution (2K, 4K) and one of eight aspect ratios, and
# documents no pixel sizes. The 2K sizes below are Seedream's published sizes per aspect
# ratio (BytePlus ModelArk's Seedream page, through a third-party copy); the 4K ones are the
# same ratios at 4096×4096's pixel count, rounded to multiples of 16 (derived, not
# published). A portable size maps only when it is one of these exactly.
_2K = {"1:1": (2048, 2048), "3:4": (1728, 2304), "4:3": (2304, 1728), "2:3": (1664, 2496),
       "3:2": (2496, 1664), "16:9": (2560, 1440), "9:16": (1440, 2560), "21:9": (3024, 1296)}


def _at_4k(w: int, h: int) -> tuple[int, int]:
    scale = (4096 * 4096 / (w * h)) ** 0.5
    return round(w * scale / 16) * 16, round(h * scale / 16) * 16


SIZES: dict[str, tuple[int, int]] = {
    **{f"2K {ratio}": size for ratio, size in _2K.items()},
    **{f"4K {ratio}": _at_4k(*size) for ratio, size in _2K.items()},
}
_BY_SIZE = {size: label for label, size in SIZES.items()}


def _portable(model: ModelSpec, settings: Portable, n_images: int
              ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if settings.size is not None:
        label = _BY_SIZE.get(settings.size)
        if label is None:
            problems.append(("size", f"{model.id} cannot make {size_label(settings.size)} (it "
                             f"takes a resolution and an aspect ratio); nearest: "
                             f"{', '.join(nearest_sizes(settings.size, SIZES))}"))
        else:
            resolution, ratio = label.split()
            params.update(resolution=resolution, aspect_ratio=ratio)
    if settings.count is not None:
        most = int(model.schema["properties"]["num_outputs"]["maximum"])
        if settings.count > most:
            problems.append(("count", f"{model.id} makes at most {most} images per job "
                             f"(count: {settings.count})"))
        else:
            params["num_outputs"] = settings.count
    return params, problems


# Pixwith's documented price: 6 credits per image.
MODELS = (
    ModelSpec("pixwith/seedream-4.5", NAME, "0-32", "ByteDance Seedream 4.5 on Pixwith",
              "pixwith-seedream-4.5.json", Price(credits_per_image=6), "Pixwith price table",
              "num_outputs", portable=_portable,
              portable_support={"size": ", ".join(f"{size_label(size)} ({label})"
                                                  for label, size in SIZES.items()),
                                "count": "1–4 (num_outputs)"}),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.pixwith import PixwithProvider

    return PixwithProvider(base_url=settings.base_url, api_key=settings.api_key,
                           transport=transport, timeout=timeout, concurrency=concurrency)


def _emulator() -> ModuleType:
    from runner.emulator import pixwith

    return pixwith


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
    emulator=EmulatorSpec(path="/pixwith/api", **emulator_parts(_emulator),
                          credentials={"PIXWITH_API_KEY": "key_00000000000000000000000000000000"},
                          # starting credits (6 an image); presigned uploads' lifetime, s
                          options={"credits": 500, "upload_ttl": 600.0},),
)
