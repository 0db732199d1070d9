"""The manifest language: load (YAML with positions), validate, expand, plan.

Pure functions from a manifest file to a :class:`~runner.jobs.Plan`::

    from runner.manifest import load_plan
    plan = load_plan("manifests/quickstart.yaml")   # raises ManifestErrors, all at once
"""

from __future__ import annotations

from runner.manifest.plan import (
    OutputNamer,
    check,
    load_manifest,
    load_plan,
    plan_document,
    plan_manifest,
    summarize,
)
from runner.manifest.validate import Manifest

__all__ = ["Manifest", "OutputNamer", "check", "load_manifest", "load_plan", "plan_document",
           "plan_manifest", "summarize"]
