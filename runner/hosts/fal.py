"""fal.ai (https://fal.ai): ByteDance Seedream 4.0 and 4.5 on fal's queue API.

Each model has two fal endpoints, ``…/text-to-image`` and ``…/edit``; a job's reference
images choose between them (the client appends the path to ``ModelSpec.endpoint``). One
schema per model covers both: the edit endpoint's ``image_urls`` are the job's reference
images, never a parameter.
"""

from __future__ import annotations

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

NAME = "fal"
MAX_NUM_IMAGES = 6  # num_images and max_images: 1 to 6 each (fal's model pages)


def image_size_limits(model: ModelSpec) -> dict[str, int]:
    """The bounds seedbatch holds a ``{width, height}`` image size to (schema
    ``x-seedbatch.image_size``): fal's own words are "total pixels must be between 960x960 and
    4096x4096" (4.0) and "width and height between 1920 and 4096, or total pixels between
    2560*1440 and 4096*4096" (4.5); the 16:1 aspect ratio is BytePlus's rule for the model
    behind both (third party for fal)."""
    return dict(model.limits["image_size"])


def size_problem(model: ModelSpec, size: tuple[int, int]) -> str | None:
    lim = image_size_limits(model)
    return free_size_problem(model, size, max_side=lim["max_side"],
                             min_pixels=lim["min_pixels"], max_pixels=lim["max_pixels"],
                             max_aspect=lim["max_aspect"])


def count_outputs(params: Mapping[str, Any]) -> int:
    """At most num_images × max_images images come back (at least num_images)."""
    return int(params.get("num_images", 1)) * int(params.get("max_images", 1))


def image_size_rule(model: ModelSpec, params: Mapping[str, Any],
                    n_images: int) -> list[tuple[str, str]]:
    """A ``{width, height}`` image size must be one the model makes as asked: fal scales
    sizes outside its range rather than refusing them, and seedbatch never lets a size be
    changed silently."""
    size = params.get("image_size")
    if not isinstance(size, Mapping):
        return []
    w, h = size.get("width"), size.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return []
    problem = size_problem(model, (w, h))
    return [("params.image_size", problem)] if problem else []


def references_rule(model: ModelSpec, params: Mapping[str, Any],
                    n_images: int) -> list[tuple[str, str]]:
    """Each generation of the edit endpoint takes the reference images and makes up to
    max_images: fal's page says "the total number of images (image inputs + image outputs)
    must not exceed 15"."""
    limit = int(model.limits["max_refs_plus_max_images"])
    most = params.get("max_images", 1)
    if n_images and isinstance(most, int) and n_images + most > limit:
        return [("params.max_images", f"{model.id}: reference images ({n_images}) + "
                 f"max_images ({most}) must be ≤ {limit}")]
    return []


def translate(model: ModelSpec, settings: Portable,
              n_images: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Portable settings → fal parameters: ``size`` → ``image_size: {width, height}`` (exactly,
    or refused with the nearest size the model makes), ``count`` → ``num_images`` with
    ``max_images: 1`` (exactly N images), ``seed`` → ``seed``."""
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    if settings.size is not None:
        problem = size_problem(model, settings.size)
        if problem:
            problems.append(("size", problem))
        else:
            params["image_size"] = {"width": settings.size[0], "height": settings.size[1]}
    if settings.count is not None:
        if 1 <= settings.count <= MAX_NUM_IMAGES:
            params.update(num_images=settings.count, max_images=1)
        else:
            problems.append(("count", f"{model.id} makes 1 to {MAX_NUM_IMAGES} images per job "
                             f"(num_images), not {settings.count}"))
    if settings.seed is not None:
        params["seed"] = settings.seed
    return params, problems


def _support(min_pixels: str) -> dict[str, str]:
    return {
        "size": f"any WxH with {min_pixels}–16,777,216 pixels, sides ≤ 4096, aspect ratio "
                f"≤ 16:1 → image_size {{width, height}}",
        "count": f"1–{MAX_NUM_IMAGES} → num_images (max_images 1): exactly N images",
        "seed": "→ seed",
    }


def _model(model_id: str, version: str, title: str, schema: str, price: float,
           min_pixels: str) -> ModelSpec:
    return ModelSpec(model_id, NAME, f"fal-ai/bytedance/seedream/{version}", title, schema,
                     Price(usd_per_image=price), "fal model page (llms.txt)", "num_images",
                     rules=(image_size_rule, references_rule), portable=translate,
                     portable_support=_support(min_pixels), count_outputs=count_outputs)


# List prices from fal's model pages: $0.03 (4.0) and $0.04 (4.5) per image. fal's answers
# carry no cost: reports show list price × images returned.
MODELS = (
    _model("fal/seedream-v4", "v4", "ByteDance Seedream 4.0 on fal.ai", "fal-seedream-v4.json",
           0.03, "921,600"),
    _model("fal/seedream-v4.5", "v4.5", "ByteDance Seedream 4.5 on fal.ai",
           "fal-seedream-v4-5.json", 0.04, "3,686,400"),
)


def client(settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None,
           timeout: httpx.Timeout | None = None, concurrency: int = 8) -> Provider:
    from runner.providers.fal import FalProvider

    return FalProvider(base_url=settings.base_url, api_key=settings.api_key,
                       transport=transport, timeout=timeout, concurrency=concurrency)


def _emulator() -> ModuleType:
    from runner.emulator import fal

    return fal


SPEC = ProviderSpec(
    name=NAME,
    title="fal.ai",
    models=MODELS,
    credentials=("FAL_KEY",),
    base_url_var="FAL_BASE_URL",
    default_base_url="https://queue.fal.run",
    client=client,
    # fal queues requests beyond an account's concurrency (2 for new accounts, up to 40)
    # rather than refusing them: the in-flight limit is ours, not the host's.
    default_limits=Limits(concurrency=4, requests_per_minute=600.0),
    can_cancel=True,  # PUT cancel_url removes a queued request; a running one may run on
    push_completion=True,  # webhooks exist (fal_webhook); polled today
    initial_latency=5.0,  # Seedream takes tens of seconds on fal
    emulator=EmulatorSpec(path="/fal", **emulator_parts(_emulator),
                          # fal keys are "<key id>:<key secret>"
                          credentials={"FAL_KEY": "demo-fal-key-id:demo-fal-key-secret"},),
    docs="https://docs.fal.ai/model-apis/inference/queue",
)
