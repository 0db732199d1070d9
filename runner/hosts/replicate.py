"""Replicate (https://replicate.com): ByteDance Seedream 4.0 and 4.5, the official models
``bytedance/seedream-4`` and ``bytedance/seedream-4.5`` on the predictions API."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.hosts import emulator_parts
from runner.jobs import Limits, Price
from runner.spec import EmulatorSpec, ModelSpec, Portable, ProviderSpec

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "replicate"
#: Custom sizes (``size: custom``): each side 1024–4096 pixels (the models' input schemas).
MIN_SIDE, MAX_SIDE = 1024, 4096
MAX_IMAGES = 15  # max_images, and reference images + generated images


def outputs_of(params: Mapping[str, Any]) -> int:
    """The most images a prediction can return: ``max_images`` under sequential
    generation, else one."""
    if params.get("sequential_image_generation") == "auto":
        value = params.get("max_images", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1
    return 1


def nearest_size(w: int, h: int) -> tuple[int, int]:
    """The size closest to ``w`` × ``h`` with both sides in bounds: the same aspect ratio
    scaled into them where it fits, else clamped."""
    scale = 1.0
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
    if min(w, h) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(w, h)
    return (min(max(round(w * scale), MIN_SIDE), MAX_SIDE),
            min(max(round(h * scale), MIN_SIDE), MAX_SIDE))


def portable(model: ModelSpec, settings: Portable, n_images: int
             ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``size: WxH`` → ``size: custom`` + ``width``/``height`` (each side 1024–4096);
    ``count: N`` → sequential generation ``auto`` with ``max_images: N`` (N > 1), or
    ``disabled`` (N = 1). Neither model has a seed input."""
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if settings.size is not None:
        w, h = settings.size
        if MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE:
            params.update(size="custom", width=w, height=h)
        else:
            nw, nh = nearest_size(w, h)
            problems.append(("size", f"{model.id} cannot make {w}x{h}: each side must be "
                             f"{MIN_SIDE}–{MAX_SIDE}; nearest: {nw}x{nh}"))
    if settings.count is not None:
        count = settings.count
        if not 1 <= count <= MAX_IMAGES:
            problems.append(("count", f"{model.id} makes 1 to {MAX_IMAGES} images per job "
                             f"(max_images), not {count}"))
        elif count == 1:
            params.update(sequential_image_generation="disabled", max_images=1)
        else:
            params.update(sequential_image_generation="auto", max_images=count)
    return params, problems


PORTABLE_SUPPORT = {
    "size": f"any WxH with each side {MIN_SIDE}–{MAX_SIDE} (size: custom + width/height)",
    "count": f"1–{MAX_IMAGES} (sequential_image_generation: auto + max_images; the model may "
             f"return fewer, and each image returned is billed)",
}

# List prices, per output image: Replicate's model page for bytedance/seedream-4 says $0.03
# (as copied in public repositories; we could not read replicate.com itself); $0.04 for
# bytedance/seedream-4.5 is third-party (price aggregators list Replicate at $0.04). A
# prediction reports no cost: the client estimates it as list price × images returned.
MODELS = (
    ModelSpec("replicate/seedream-4.5", NAME, "bytedance/seedream-4.5",
              "ByteDance Seedream 4.5 on Replicate", "replicate-seedream-4-5.json",
              Price(usd_per_image=0.04), "third-party list price (estimate)", "max_images",
              portable=portable, portable_support=PORTABLE_SUPPORT, count_outputs=outputs_of),
    ModelSpec("replicate/seedream-4", NAME, "bytedance/seedream-4",
              "ByteDance Seedream 4.0 on Replicate", "replicate-seedream-4.json",
              Price(usd_per_image=0.03), "Replicate model page (estimate)", "max_images",
              portable=portable, portable_support=PORTABLE_SUPPORT, count_outputs=outputs_of),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.replicate import ReplicateProvider

    return ReplicateProvider(base_url=settings.base_url, api_token=settings.api_key,
                             transport=transport, timeout=timeout, concurrency=concurrency)


def _emulator() -> ModuleType:
    from runner.emulator import replicate

    return replicate


SPEC = ProviderSpec(
    name=NAME,
    title="Replicate",
    models=MODELS,
    credentials=("REPLICATE_API_TOKEN",),
    base_url_var="REPLICATE_BASE_URL",
    default_base_url="https://api.replicate.com/v1",
    client=client,
    # Replicate documents 600 prediction creates a minute and 3,000 a minute for other
    # calls; seedbatch counts every call against one limit, so 600 keeps creates within
    # theirs whatever the mix. No concurrency limit is documented for official models.
    default_limits=Limits(concurrency=8, requests_per_minute=600.0),
    can_cancel=True,  # POST urls.cancel
    push_completion=True,  # webhooks exist; polled here
    initial_latency=5.0,  # Seedream takes several seconds to a minute
    docs="https://replicate.com/docs/reference/http",
    emulator=EmulatorSpec(path="/replicate/v1", **emulator_parts(_emulator),
                          credentials={"REPLICATE_API_TOKEN": "r8_demo0emulator0token0000000000"},
                          # seconds a finished prediction keeps its input and output
                          # (Replicate: one hour); then data_removed and the files are gone
                          # the account's credit: below list price × images a create
                          # answers 402 Insufficient credit
                          options={"retention_seconds": 3600.0, "credit_usd": 1000.0},),
)
