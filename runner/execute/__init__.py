"""Execution: run a plan's jobs against the providers, journal every step, resume after stops.

``executor.Executor`` does the work; ``journal.Journal`` is the run's write-ahead record;
``limits`` caps tasks in flight and requests per minute; ``policy`` decides when to poll and
when to retry; ``download`` fetches outputs intact. The run directory they work in is
:mod:`runner.rundir`; ``runner.api`` puts them together.
"""

from __future__ import annotations

import logging

from runner.execute.journal import JobRecord, JobState, Journal
from runner.outputs import OutputRecord

# stamina logs each scheduled retry at WARNING; the executor journals them itself. A handler
# here keeps Python's last-resort handler from printing them on the terminal.
logging.getLogger("stamina").addHandler(logging.NullHandler())

__all__ = ["JobRecord", "JobState", "Journal", "OutputRecord"]
