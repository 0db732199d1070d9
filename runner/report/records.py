"""Run records: the plain, typed input every report is built from.

A run's journal (or a test) turns into one :class:`RunRecords`: what the run was
(:class:`RunMeta`), and for every planned job what was asked and what happened
(:class:`JobRecord`), with the files it left behind (:class:`~runner.outputs.OutputRecord`,
as the journal has them). Nothing here
does I/O; :func:`runner.report.build.build_report` turns records into report.json's dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runner.jobs import ImageRef
from runner.outputs import OutputRecord
from runner.rundir import MANIFEST_NAME


class JobStatus(StrEnum):
    """Where a job ended up in a run."""

    SUCCEEDED = "succeeded"  # outputs downloaded (or reused from an earlier run)
    FAILED = "failed"  # the provider refused or failed the task
    UNKNOWN = "unknown"  # a submit left but its answer was lost: a task may exist (and bill)
    CANCELLED = "cancelled"  # stopped on request
    PENDING = "pending"  # never finished in this run (interrupted; resume picks it up)
    SKIPPED = "skipped"  # never started (budget reached, run stopped by a fatal error)


Timestamp = str | float | int | None  # ISO 8601 text or unix seconds; normalised to UTC text


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One planned job: the request (from the plan) and its outcome (from the journal)."""

    key: str
    name: str
    provider: str
    model: str
    alias: str
    prompt: str
    params: Mapping[str, Any] = field(default_factory=dict)
    axes: Mapping[str, Any] = field(default_factory=dict)  # this job's matrix values
    index: int = 0  # repeat index
    inputs: tuple[ImageRef, ...] = ()  # the reference images it sent
    status: JobStatus | str = JobStatus.PENDING
    error: str | None = None
    task_id: str | None = None
    attempts: int = 0  # submit attempts
    polls: int = 0  # status requests
    submitted_at: Timestamp = None
    started_at: Timestamp = None  # the provider started working (first non-queued state)
    finished_at: Timestamp = None
    cost_usd: float | None = None  # what the provider reported, in USD
    credits: float | None = None  # what the provider charged in credits
    estimate_images: int = 0
    estimate_usd: float = 0.0
    estimate_credits: float = 0.0
    reused: bool = False
    reused_from: str | None = None  # run id the outputs were first produced in
    reused_via: str | None = None  # "store" when they came from a shared store
    outputs: tuple[OutputRecord, ...] = ()
    emulated: bool = False  # made by an emulator: placeholders, never a real result
    ran_on_after_cancel: bool = False  # a cancel could not stop its task: it ran on, billed


@dataclass(frozen=True, slots=True)
class RunMeta:
    """The run as a whole."""

    run_id: str
    name: str
    manifest_path: str  # the manifest as given to `seedbatch run` (absolute)
    manifest_sha256: str
    manifest_copy: str = MANIFEST_NAME  # the byte-exact copy, relative to the run directory
    description: str | None = None
    started_at: Timestamp = None
    finished_at: Timestamp = None
    axes: tuple[str, ...] = ()  # matrix variable names in manifest order
    emulated: bool = False  # some provider was reached through an emulator
    emulated_providers: tuple[str, ...] = ()  # which ones
    # per provider the run sent jobs to: the package that registered it, as loaded when the
    # run was created ({"entry_point", "distribution", "version"}; none for older runs)
    providers: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    # the shared store the run used and what of the run is in it (journal meta "store")
    store: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunRecords:
    meta: RunMeta
    jobs: tuple[JobRecord, ...] = ()
