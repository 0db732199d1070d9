"""A job's record: the JSON form of a :class:`~runner.jobs.Job`, both ways.

One job, three documents that carry it::

    job_to_dict(job)            {"key", "name", "alias", "provider", "model", "prompt",
                                 "params", "images": [{"ref", "url", "path", "sha256"}],
                                 "index", "axes", "estimate": {"images", "usd", "credits"}}
    seedbatch plan --json       that, plus "output" (its first image's path), "line" and,
                                with a cache, "status"        (runner.manifest.plan_document)
    plan.json (job_to_record)   that, plus "price": {"usd_per_image", "credits_per_image"},
                                "line" and "output_names": {index: {ext: name}}

:func:`job_from_record` reads a plan.json record back into a Job: ``resume`` runs it
again, the report shows what it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.jobs import Estimate, ImageRef, Job, Price


def job_to_dict(job: Job) -> dict[str, Any]:
    """The JSON form of a job shared by ``seedbatch plan --json`` and plan.json."""
    return {
        "key": job.key,
        "name": job.name,
        "alias": job.alias,
        "provider": job.provider,
        "model": job.model,
        "prompt": job.prompt,
        "params": dict(job.params),
        "images": [image.to_dict() for image in job.images],
        "index": job.index,
        "axes": dict(job.axes),
        "estimate": {"images": job.estimate.images, "usd": job.estimate.usd,
                     "credits": job.estimate.credits},
    }


def job_to_record(job: Job, names: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """plan.json's record of ``job``; ``names`` is image index → extension → output name."""
    doc = job_to_dict(job)
    doc["price"] = {"usd_per_image": job.price.usd_per_image,
                    "credits_per_image": job.price.credits_per_image}
    doc["line"] = job.line
    doc["output_names"] = {k: dict(v) for k, v in names.items()}
    return doc


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def images_from_record(entries: Any) -> tuple[ImageRef, ...]:
    """A record's ``images``: ``{"ref", "url", "path", "sha256"}`` entries, or bare URLs
    (a hand-written plan)."""
    found = []
    for image in entries or []:
        if isinstance(image, Mapping):
            found.append(ImageRef(ref=str(image.get("ref", "")), url=image.get("url"),
                                  path=image.get("path"), sha256=image.get("sha256")))
        else:
            found.append(ImageRef(ref=str(image), url=str(image)))
    return tuple(found)


def job_from_record(doc: Mapping[str, Any], *, partial: bool = False) -> Job:
    """The job a plan.json record describes.

    A record lacking ``key``, ``name``, ``model``, ``provider`` or ``prompt`` is a
    KeyError, unless ``partial``: then they are empty, for a reader that has them from
    elsewhere (the report takes them from the journal)."""
    def text(name: str) -> str:
        return str(doc.get(name, "")) if partial else doc[name]

    est = _mapping(doc.get("estimate"))
    price = _mapping(doc.get("price"))
    return Job(
        key=text("key"), name=text("name"), alias=doc.get("alias", ""), model=text("model"),
        provider=text("provider"), prompt=text("prompt"),
        params=dict(_mapping(doc.get("params"))),
        images=images_from_record(doc.get("images")),
        index=int(doc.get("index") or 0), axes=dict(_mapping(doc.get("axes"))),
        price=Price(price.get("usd_per_image"), price.get("credits_per_image")),
        estimate=Estimate(int(est.get("images", 0)), float(est.get("usd", 0.0)),
                          float(est.get("credits", 0.0))),
        line=int(doc.get("line") or 0),
    )
