"""The models seedbatch knows: model id → provider, endpoint, parameter schema, price, limits.

Everything here is pure data and pure checks. Constraints that JSON Schema cannot express
(pixel ranges, aspect ratios, reference images + outputs) live in :meth:`ModelSpec.check`
and come back in the same form as schema errors: a JSON path under the parameters and a
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jsonschema import Draft202012Validator

from runner.jobs import Price
from runner.resources import load_schema


@dataclass(frozen=True)
class ModelSpec:
    id: str  # "wiro/seedream-v4"
    provider: str  # "wiro" | "pixwith"
    endpoint: str  # Wiro: "bytedance/seedream-v4" (Run/<endpoint>); Pixwith: model_id "0-32"
    title: str
    schema_file: str  # under schemas/models/
    price: Price  # list price for estimates
    price_source: str
    outputs_param: str | None  # the parameter that sets how many images come back

    @cached_property
    def schema(self) -> dict[str, Any]:
        return load_schema(f"models/{self.schema_file}")

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)

    @property
    def limits(self) -> dict[str, Any]:
        return dict(self.schema.get("x-seedbatch", {}))

    @property
    def max_input_images(self) -> int:
        return int(self.limits.get("max_input_images", 0))

    @cached_property
    def defaults(self) -> dict[str, Any]:
        return {name: prop["default"] for name, prop in self.schema["properties"].items()
                if "default" in prop}

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Final parameters: every documented default made explicit, then ``params`` on top."""
        merged = dict(self.defaults)
        merged.update(params)
        return merged

    def images_per_job(self, params: Mapping[str, Any]) -> int:
        """How many images a job asks for at most (what estimates are based on)."""
        if self.outputs_param is None:
            return 1
        value = params.get(self.outputs_param, self.defaults.get(self.outputs_param, 1))
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    def check(self, params: Mapping[str, Any], n_images: int) -> list[tuple[str, str]]:
        """Every problem with final ``params`` and ``n_images`` reference images.

        Returns ``(json_path_suffix, message)`` pairs; the suffix is relative to the job
        (``params.width``, ``images``)."""
        problems: list[tuple[str, str]] = []
        for err in sorted(self.validator.iter_errors(dict(params)), key=lambda e: list(e.path)):
            where = "params" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]"
                                       for p in err.absolute_path)
            if err.validator == "additionalProperties":
                known = ", ".join(sorted(self.schema["properties"]))
                extra = sorted(set(err.instance) - set(self.schema["properties"]))
                for name in extra:
                    problems.append((f"params.{name}", f"{self.id} has no parameter "
                                     f"{name!r}; it takes: {known}"))
                continue
            problems.append((where, f"{self.id}: {err.message}"))
        if problems:
            return problems
        lim = self.limits
        if n_images > self.max_input_images:
            if self.max_input_images == 0:
                problems.append(("images", f"{self.id} is text-to-image only and takes no "
                                 f"reference images ({n_images} given)"))
            else:
                problems.append(("images", f"{self.id} takes at most {self.max_input_images} "
                                 f"reference images ({n_images} given)"))
        if "max_total_images" in lim and self.outputs_param:
            outputs = self.images_per_job(params)
            if n_images + outputs > lim["max_total_images"]:
                problems.append((f"params.{self.outputs_param}", f"{self.id}: reference images "
                                 f"({n_images}) + {self.outputs_param} ({outputs}) must be ≤ "
                                 f"{lim['max_total_images']}"))
        if "min_pixels" in lim:
            w, h = params.get("width"), params.get("height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                px = w * h
                if not lim["min_pixels"] <= px <= lim["max_pixels"]:
                    problems.append(("params.width", f"{self.id}: width × height = {w}×{h} = "
                                     f"{px:,} pixels; it must be between {lim['min_pixels']:,} "
                                     f"and {lim['max_pixels']:,} (e.g. 2560×1440 to 4096×4096)"))
                ratio = w / h
                if not 1 / lim["max_aspect"] <= ratio <= lim["max_aspect"]:
                    problems.append(("params.height", f"{self.id}: aspect ratio {w}:{h} is "
                                     f"outside 1/{lim['max_aspect']}..{lim['max_aspect']}"))
        return problems


# List prices: BytePlus's official Seedream prices (4.5 $0.04, 4.0 $0.03 per image; 3.0 $0.03
# from a third-party source); Pixwith's documented 6 credits per image. Manifests override
# them with `price:`; provider-reported cost always wins in reports.
MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("wiro/seedream-v4-5", "wiro", "bytedance/seedream-v4-5",
                  "ByteDance Seedream 4.5 on Wiro", "wiro-seedream-v4-5.json",
                  Price(usd_per_image=0.04), "BytePlus list price", "maxImages"),
        ModelSpec("wiro/seedream-v4", "wiro", "bytedance/seedream-v4",
                  "ByteDance Seedream 4.0 on Wiro", "wiro-seedream-v4.json",
                  Price(usd_per_image=0.03), "BytePlus list price", "maxImages"),
        ModelSpec("wiro/seedream-v3", "wiro", "bytedance/text-to-image-seedream-v3",
                  "ByteDance Seedream 3.0 text-to-image on Wiro", "wiro-seedream-v3.json",
                  Price(usd_per_image=0.03), "third-party list price", None),
        ModelSpec("pixwith/seedream-4.5", "pixwith", "0-32",
                  "ByteDance Seedream 4.5 on Pixwith", "pixwith-seedream-4.5.json",
                  Price(credits_per_image=6), "Pixwith price table", "num_outputs"),
    )
}

PROVIDER_NAMES: tuple[str, ...] = ("wiro", "pixwith")


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)


def by_endpoint(provider: str, endpoint: str) -> ModelSpec | None:
    for spec in MODELS.values():
        if spec.provider == provider and spec.endpoint == endpoint:
            return spec
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
        "params": params,
    }
