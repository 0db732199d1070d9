"""BytePlus ModelArk (https://www.byteplus.com/en/product/modelark): ByteDance's own
Seedream 4.0 and 4.5, one synchronous ``POST /images/generations`` per job.

The call holds until the images are made and answers with them (or streams one event per
image with ``stream: true``); there is no task id and nothing to poll. The client hands the
answer to the executor as a finished task (``SubmitResult.final``). docs/hosts/byteplus.md
has the whole story.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.hosts import emulator_parts
from runner.jobs import Limits, Price
from runner.spec import EmulatorSpec, ModelSpec, Portable, ProviderSpec, free_size_problem

if TYPE_CHECKING:  # pragma: no cover - types only
    import httpx

    from runner.config import ProviderSettings
    from runner.providers.base import Provider

NAME = "byteplus"
#: Reference images + images made ≤ this (ModelArk's documented limit).
MAX_TOTAL_IMAGES = 15
MAX_OUTPUTS = 15
#: The named sizes: 1K/2K/4K are square at that many pixels a side (BytePlus's reference
#: table; with reference images the host picks the aspect ratio itself).
NAMED_SIZES = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}
_WXH = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")


def parse_size(value: Any) -> tuple[int, int] | None:
    """``"WxH"`` or a named size → (width, height); None when it is neither."""
    if not isinstance(value, str):
        return None
    if value in NAMED_SIZES:
        return NAMED_SIZES[value]
    match = _WXH.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def outputs_asked(params: Mapping[str, Any]) -> int:
    """At most how many images a request makes: ``max_images`` (default 15) when
    sequential generation is ``auto``, else one."""
    if params.get("sequential_image_generation") != "auto":
        return 1
    options = params.get("sequential_image_generation_options")
    value = options.get("max_images", MAX_OUTPUTS) if isinstance(options, Mapping) else MAX_OUTPUTS
    return value if isinstance(value, int) and not isinstance(value, bool) else MAX_OUTPUTS


def size_problem(spec: ModelSpec, size: tuple[int, int]) -> str | None:
    lim = spec.limits
    return free_size_problem(spec, size, min_pixels=lim["min_pixels"],
                             max_pixels=lim["max_pixels"], max_aspect=lim["max_aspect"])


def check_size(spec: ModelSpec, params: Mapping[str, Any], n_images: int
               ) -> list[tuple[str, str]]:
    """A ``WxH`` size within the model's pixel range and aspect ratios (the schema holds
    its form and the named sizes)."""
    value = params.get("size")
    if not isinstance(value, str) or value in NAMED_SIZES:
        return []
    size = parse_size(value)
    problem = size_problem(spec, size) if size is not None else None
    return [("params.size", problem)] if problem else []


def check_total_images(spec: ModelSpec, params: Mapping[str, Any], n_images: int
                       ) -> list[tuple[str, str]]:
    """Reference images + max_images ≤ 15, and max_images only with sequential auto."""
    options = params.get("sequential_image_generation_options")
    where = "params.sequential_image_generation_options.max_images"
    if isinstance(options, Mapping) and "max_images" in options and \
            params.get("sequential_image_generation") != "auto":
        return [(where, f"{spec.id}: max_images only counts with "
                 f"sequential_image_generation: auto (it is "
                 f"{params.get('sequential_image_generation')!r})")]
    outputs = outputs_asked(params)
    if n_images + outputs > MAX_TOTAL_IMAGES:
        return [(where, f"{spec.id}: reference images ({n_images}) + max_images ({outputs}) "
                 f"must be ≤ {MAX_TOTAL_IMAGES}; set max_images to at most "
                 f"{max(1, MAX_TOTAL_IMAGES - n_images)}")]
    return []


def translate(spec: ModelSpec, settings: Portable, n_images: int
              ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``size: WxH`` → ``size: "WxH"`` (exactly, or refused with the nearest it can make);
    ``count: N`` → ``sequential_image_generation: auto`` and
    ``sequential_image_generation_options.max_images: N`` for N > 1 (disabled for 1)."""
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if settings.size is not None:
        problem = size_problem(spec, settings.size)
        if problem:
            problems.append(("size", problem))
        else:
            params["size"] = f"{settings.size[0]}x{settings.size[1]}"
    if settings.count is not None:
        count = settings.count
        most = min(MAX_OUTPUTS, MAX_TOTAL_IMAGES - n_images)
        if not 1 <= count <= most:
            problems.append(("count", f"{spec.id} makes 1 to {most} images per job with "
                             f"{n_images} reference image{'s' if n_images != 1 else ''} "
                             f"(reference images + images ≤ {MAX_TOTAL_IMAGES}); {count} asked"))
        elif count == 1:
            params["sequential_image_generation"] = "disabled"
        else:
            params["sequential_image_generation"] = "auto"
            params["sequential_image_generation_options"] = {"max_images": count}
    return params, problems


PORTABLE_SUPPORT = {
    "size": "any WxH in the model's pixel range (4.0: 921,600–16,777,216 pixels; 4.5: "
            "3,686,400–16,777,216), aspect ratio 1/16–16 → size: \"WxH\"",
    "count": "1–15 (reference images + count ≤ 15) → sequential_image_generation: auto and "
             "max_images: N; sequential generation returns up to N images, billed per image made",
}

# List prices: BytePlus's own (4.0 $0.03, 4.5 $0.04 per image). The cost in reports is the
# answer's usage.generated_images × this price: ModelArk reports images, not money.
_COMMON: dict[str, Any] = {"rules": (check_size, check_total_images), "portable": translate,
                           "portable_support": PORTABLE_SUPPORT,
                           "count_outputs": outputs_asked, "price_source": "BytePlus list price"}
MODELS = (
    ModelSpec("byteplus/seedream-4-0", NAME, "seedream-4-0-250828",
              "ByteDance Seedream 4.0 on BytePlus ModelArk", "byteplus-seedream-4-0.json",
              Price(usd_per_image=0.03), **_COMMON),
    ModelSpec("byteplus/seedream-4-5", NAME, "seedream-4-5-251128",
              "ByteDance Seedream 4.5 on BytePlus ModelArk", "byteplus-seedream-4-5.json",
              Price(usd_per_image=0.04), **_COMMON),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.byteplus import BytePlusProvider

    return BytePlusProvider(base_url=settings.base_url, api_key=settings.api_key,
                            transport=transport, timeout=timeout, concurrency=concurrency)


def _emulator() -> ModuleType:
    from runner.emulator import byteplus

    return byteplus


SPEC = ProviderSpec(
    name=NAME,
    title="BytePlus ModelArk",
    models=MODELS,
    credentials=("ARK_API_KEY",),
    base_url_var="BYTEPLUS_BASE_URL",
    default_base_url="https://ark.ap-southeast.bytepluses.com/api/v3",
    client=client,
    # Each call holds a connection for the whole generation (tens of seconds; minutes for a
    # set of 4K images): 8 in flight keeps every call inside the client's parallel requests
    # (runner.providers.http) and far below the ~500 images a minute per model a third-party
    # source gives; accounts' own limits may be lower (a 429 lowers the target).
    default_limits=Limits(concurrency=8, requests_per_minute=120.0),
    # Closing the call is the only way to stop it, and whether the images are then still
    # made and billed is not documented: the call runs to its answer and is downloaded.
    can_cancel=False,
    synchronous=True,
    initial_latency=20.0,
    emulator=EmulatorSpec(path="/byteplus/api/v3", **emulator_parts(_emulator),
                          credentials={"ARK_API_KEY": "demo-ark-key"},
                          # the model an endpoint id (ep-…) is served as
                          options={"endpoint_model": "seedream-4-5-251128"},),
    docs="https://docs.byteplus.com/en/docs/ModelArk",
)
