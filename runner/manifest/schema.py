"""The manifest's JSON Schema for the providers installed.

``schemas/manifest.schema.json`` is the schema for seedbatch's built-in hosts (editors read
it through ``# yaml-language-server: $schema=…``); :func:`manifest_schema` rebuilds the
parts that depend on the installed providers from the registry: the model ids an alias may
name, and the provider keys of ``limits:`` and ``providers:``. ``seedbatch schema`` prints it
for the providers installed here; a test holds the committed file to the built-ins' output.
"""

from __future__ import annotations

import copy
from typing import Any

from runner.plugins import Registry, registry
from runner.resources import load_schema


def manifest_schema(reg: Registry | None = None) -> dict[str, Any]:
    reg = reg or registry()
    schema = copy.deepcopy(load_schema("manifest.schema.json"))
    providers = sorted(reg.providers.values(), key=lambda p: p.name)
    model_ids = [m.id for p in providers for m in p.models]
    model = schema["$defs"]["alias"]["properties"]["model"]
    model["enum"] = model_ids
    listed = ", ".join(model_ids[:-1]) + (" or " if len(model_ids) > 1 else "") + \
        (model_ids[-1] if model_ids else "")
    model["description"] = (f"Model id: {listed} (`seedbatch models` describes each; a "
                            f"provider plugin adds its own).")
    limits = schema["properties"]["limits"]
    limits["properties"] = {
        p.name: {"$ref": "#/$defs/limits",
                 "description": f"Limits for {p.title} (every API call counts towards "
                                f"requests_per_minute)."}
        for p in providers}
    section = schema["properties"]["providers"]
    creds = ", ".join(v for p in providers for v in p.credentials)
    urls = " / ".join(p.base_url_var for p in providers)
    section["description"] = (f"Provider endpoints. Credentials never live here: they come "
                              f"from {creds}. {urls} win over these.")
    section["properties"] = {
        p.name: {"$ref": "#/$defs/provider", "description": f"{p.title} endpoint settings."}
        for p in providers}
    return schema
