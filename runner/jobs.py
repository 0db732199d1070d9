"""The job model shared by every stage: what expansion produces and the executor runs.

A :class:`Job` is one request to one provider: a model, a rendered prompt, final parameters
(natural YAML types; the provider layer converts them for the wire) and reference images in
order. Its :attr:`Job.key` is the sha256 of the canonical JSON of exactly what the provider
will be asked, so the same spec gives the same key on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no insignificant white space, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One reference image: a local file (with its content hash) or a remote URL."""

    ref: str  # as the manifest wrote it (after set names were resolved)
    url: str | None = None
    path: str | None = None  # absolute path of a local file
    sha256: str | None = None  # content hash of a local file

    @property
    def is_url(self) -> bool:
        return self.url is not None

    def key_part(self) -> dict[str, str]:
        """What of this image goes into a job key: the URL, or the local file's content hash."""
        if self.url is not None:
            return {"url": self.url}
        return {"sha256": self.sha256 or ""}

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "url": self.url, "path": self.path, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Price:
    """List price used for estimates; what the provider reports always wins in reports."""

    usd_per_image: float | None = None
    credits_per_image: float | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    images: int = 0
    usd: float = 0.0
    credits: float = 0.0

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.images + other.images, self.usd + other.usd,
                        self.credits + other.credits)


def job_key(model: str, prompt: str, params: Mapping[str, Any],
            images: tuple[ImageRef, ...], index: int, *,
            canonical_params: str | None = None) -> str:
    """The content key: sha256 of the canonical JSON of what the provider will be asked::

        {"images": [image.key_part()…], "index": …, "model": …, "params": …, "prompt": …}

    ``canonical_params`` is ``canonical_json(params)`` when the caller already has it (the
    expander makes it once per distinct parameter set). The document is put together from
    its canonical parts in sorted key order: the same text as ``canonical_json(doc)``."""
    text = "".join((
        '{"images":', canonical_json([img.key_part() for img in images]) if images else "[]",
        ',"index":', int.__repr__(index) if type(index) is int else canonical_json(index),
        ',"model":', _json_text(model),
        ',"params":', canonical_json(dict(params)) if canonical_params is None
        else canonical_params,
        ',"prompt":', _json_text(prompt), "}"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_text(value: Any) -> str:
    """``canonical_json`` of a value, without the encoder's set-up cost for a string."""
    return encode_basestring(value) if type(value) is str else canonical_json(value)


@dataclass(frozen=True, slots=True)
class Job:
    """One concrete request, fully rendered (its JSON form: :mod:`runner.jobrecord`)."""

    key: str
    name: str
    alias: str  # the manifest's model alias
    model: str  # model id, "<provider>/<model>"
    provider: str  # the provider's name (the model id's prefix)
    prompt: str
    params: Mapping[str, Any]  # final parameters: model defaults < alias params < job params
    images: tuple[ImageRef, ...] = ()
    index: int = 0  # repeat index
    axes: Mapping[str, Any] = field(default_factory=dict)  # this job's matrix values
    price: Price = Price()
    estimate: Estimate = Estimate()
    line: int = 0  # the manifest line of the job entry this came from


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-provider limits: tasks in flight, requests per minute (every call counts)."""

    concurrency: int | None = None
    requests_per_minute: float | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    max_usd: float | None = None
    max_credits: float | None = None


@dataclass(frozen=True)
class Plan:
    """A manifest expanded into concrete jobs, with what the executor needs besides."""

    manifest_path: Path  # absolute
    manifest_bytes: bytes  # byte-exact content, copied into the run directory
    name: str
    jobs: tuple[Job, ...]
    limits: Mapping[str, Limits] = field(default_factory=dict)  # provider name → limits
    budget: Budget = Budget()
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # `providers:`
    axes: tuple[str, ...] = ()  # matrix variable names in the order the manifest writes them
    description: str | None = None  # the manifest's `description:`
    # the manifest's `store:`: a URL, or a path made absolute against the manifest's folder
    store: str | None = None
    # Renders output.filename for (job, image index, extension without dot) into a relative
    # POSIX path under outputs/; raises ManifestError for a name that would escape it.
    output_namer: Any = None

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def output_name(self, job: Job, image_index: int, ext: str) -> str:
        if self.output_namer is None:
            return f"{job.name}/{image_index}.{ext}"
        return str(self.output_namer(job, image_index, ext))

    def estimate(self) -> Estimate:
        """The jobs' estimates added in order (the same sums as ``Estimate.__add__`` gives)."""
        images, usd, credits = 0, 0.0, 0.0
        for job in self.jobs:
            e = job.estimate
            images += e.images
            usd += e.usd
            credits += e.credits
        return Estimate(images, usd, credits)
