"""The models seedbatch knows: every installed provider's models, by id.

A view of the provider registry (:mod:`runner.plugins`): built-in hosts and installed
plugins alike. Each model is a :class:`~runner.spec.ModelSpec` (parameter schema, limits,
cross-field rules, list price). Lookups read the registry each time, so
``SEEDBATCH_PLUGINS`` is honoured wherever it is set.
"""

from __future__ import annotations

from typing import Any

from runner.plugins import registry
from runner.spec import PORTABLE_SETTINGS, ModelSpec

__all__ = ["ModelSpec", "by_endpoint", "cross_field_rules", "describe_model", "get_model",
           "models", "portable_support", "provider_names"]


def models() -> dict[str, ModelSpec]:
    """Every installed model, by id."""
    return registry().models


def provider_names() -> tuple[str, ...]:
    return tuple(sorted(registry().providers))


def get_model(model_id: str) -> ModelSpec | None:
    return models().get(model_id)


def by_endpoint(provider: str, endpoint: str) -> ModelSpec | None:
    spec = registry().providers.get(provider)
    for model in spec.models if spec is not None else ():
        if model.endpoint == endpoint:
            return model
    return None


def cross_field_rules(spec: ModelSpec) -> list[str]:
    """The model's limits that JSON Schema cannot say, in words."""
    lim = spec.limits
    rules: list[str] = []
    if spec.max_input_images == 0:
        rules.append("text-to-image only: no reference images")
    else:
        rules.append(f"at most {spec.max_input_images} reference images")
    if "max_total_images" in lim and spec.outputs_param:
        rules.append(f"reference images + {spec.outputs_param} ≤ {lim['max_total_images']}")
    if "min_pixels" in lim:
        rules.append(f"width × height between {lim['min_pixels']:,} and {lim['max_pixels']:,} "
                     f"pixels")
    if "max_aspect" in lim:
        rules.append(f"aspect ratio width/height between 1/{lim['max_aspect']} and "
                     f"{lim['max_aspect']}")
    return rules


def describe_model(spec: ModelSpec) -> dict[str, Any]:
    """Everything a user needs to write a model's parameters (``seedbatch models --json``)."""
    params = []
    for name, prop in spec.schema["properties"].items():
        entry: dict[str, Any] = {"name": name, "type": prop.get("type")}
        for key in ("default", "enum", "minimum", "maximum", "pattern"):
            if key in prop:
                entry[key] = prop[key]
        entry["description"] = prop.get("description", "")
        params.append(entry)
    return {
        "id": spec.id,
        "provider": spec.provider,
        "endpoint": spec.endpoint,
        "title": spec.title,
        "description": spec.schema.get("description", ""),
        "price": {"usd_per_image": spec.price.usd_per_image,
                  "credits_per_image": spec.price.credits_per_image,
                  "source": spec.price_source},
        "max_input_images": spec.max_input_images,
        "outputs_param": spec.outputs_param,
        "limits": spec.limits,
        "rules": cross_field_rules(spec),
        "portable": portable_support(spec),
        "params": params,
    }


def portable_support(spec: ModelSpec) -> dict[str, str | None]:
    """Each portable setting (size, count, seed): what the model can do with it, in words,
    or None when it takes none (the manifest must use its own parameter)."""
    support = spec.portable_support if spec.portable is not None else {}
    return {name: support.get(name) for name in PORTABLE_SETTINGS}
