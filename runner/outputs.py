"""An output file, as the run that made it and the runs that reuse it see it.

One image, from the provider to the record::

    RemoteOutput     (runner.providers.base)   what a provider lists: URL, name, type, size.
                                               Not a file yet.
    Downloaded       (runner.execute.download) what one download wrote: its absolute path,
                                               size, sha256, sniffed type, pixel size. The
                                               download does not know the job or the run.
    OutputRecord     (here)                    a file a job left in its run directory (path
                                               relative to it): the journal's ``outputs``
                                               row, and what report.json's ``outputs`` are
                                               built from.
    CachedOutput     (runner.report.cache)     a file of an earlier run whose size and sha256
                                               were checked again (its type may be unknown).
    ReusedOutput     (here)                    such a file, handed to the executor to link
                                               into a new run (its type settled).

A store hit (``runner.store.sync``) is a ``ReuseHit`` too, ``via="store"``: its objects
were fetched and checked against their sha256 before the run, into a staging folder the
executor links or copies from like any earlier run's files.

``CachedOutput`` and ``ReusedOutput`` say nearly the same; they stay two while the rules of
which earlier outputs may be reused are being changed in ``runner/report/cache.py``.

:data:`ReuseLookup` is the executor's hook for reuse: ``job → ReuseHit | None``;
``runner.report.cache.reuse_lookup`` makes one, ``runner.api`` passes it in. It lives
here, below both, so that neither imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.jobs import Job


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One file a job left in its run directory."""

    job_key: str
    index: int  # image index within the job
    path: str  # relative to the run directory, POSIX separators: "outputs/tent/0.png"
    url: str | None  # where it was downloaded from
    bytes: int
    sha256: str
    content_type: str
    width: int | None
    height: int | None
    finished_at: str = ""  # set by the journal

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ReusedOutput:
    """An output found in an earlier run, to be placed into this one."""

    source: Path
    index: int
    bytes: int
    sha256: str
    content_type: str
    width: int | None = None
    height: int | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReuseHit:
    origin: str  # the run that made the outputs (an earlier run directory's id)
    outputs: tuple[ReusedOutput, ...]
    via: str = ""  # "store" when they come from a shared store, "" from a local run


ReuseLookup = Callable[[Job], ReuseHit | None]
