"""What a run shows while it runs: a live display on a terminal, log lines otherwise.

The executor reports to a :class:`ProgressSink`: every job state change, the counts and
spend after it, and run-level notices (interrupts, fatal errors). Three sinks:

* :class:`RichProgress` — a live bar on a terminal: done/total, running, failed, spend, ETA;
* :class:`LogProgress` — one plain line per job state change of note (to stderr);
* :class:`NullProgress` — nothing (``--quiet``: only the final summary is printed).

A sink may also have ``task_progress(name, percent)``: the progress a host pushes for a task
in flight (``percent`` None once the task is no longer followed); the live display shows
the tasks furthest along.

Nothing here ever sees a credential: sinks are given job names, states and error texts that
the provider clients already redacted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Protocol

from runner.display import spend
from runner.execute.journal import JobState

if TYPE_CHECKING:  # rich itself is loaded only when a live display starts
    from rich.console import Console
    from rich.progress import TaskID

# The job-state groupings have one home (runner.execute.journal); these are their names.
DONE_STATES = tuple(str(s) for s in JobState if s.ended)
RUNNING_STATES = tuple(str(s) for s in JobState if s.in_flight)
NOTABLE = frozenset(DONE_STATES)


class ProgressSink(Protocol):
    def start(self, total: int, counts: Mapping[str, int]) -> None: ...

    def job_state(self, name: str, state: str, detail: str = "") -> None: ...

    def update(self, counts: Mapping[str, int], spent_usd: float,
               spent_credits: float) -> None: ...

    def notice(self, message: str) -> None: ...

    def stop(self) -> None: ...


#: How many tasks' pushed progress the live display shows at once.
SHOWN_TASKS = 3


def live_line(percents: Mapping[str, float], shown: int = SHOWN_TASKS) -> str:
    """The tasks furthest along, ``name 42%`` each, and how many more report progress."""
    if not percents:
        return ""
    top = sorted(percents.items(), key=lambda kv: (-kv[1], kv[0]))[:shown]
    text = " · ".join(f"{name} {pct:.0f}%" for name, pct in top)
    more = len(percents) - len(top)
    return text + (f" (+{more})" if more > 0 else "")


def _done(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in DONE_STATES)


def _running(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in RUNNING_STATES)


class NullProgress:
    def start(self, total: int, counts: Mapping[str, int]) -> None:
        pass

    def job_state(self, name: str, state: str, detail: str = "") -> None:
        pass

    def update(self, counts: Mapping[str, int], spent_usd: float, spent_credits: float) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


class LogProgress:
    """Plain lines, one per job state change of note, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self.total = 0
        self.counts: Mapping[str, int] = {}

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        stream.flush()

    def start(self, total: int, counts: Mapping[str, int]) -> None:
        self.total = total - counts.get("skipped", 0)
        self.counts = counts
        self._write(f"{self.total} job{'s' if self.total != 1 else ''} to run, "
                    f"{_done(counts)} already done")

    def job_state(self, name: str, state: str, detail: str = "") -> None:
        if state in NOTABLE:
            done = _done(self.counts) + 1
            tail = f" — {detail}" if detail and state != "succeeded" else ""
            self._write(f"[{min(done, self.total)}/{self.total}] {name}: {state}{tail}")

    def update(self, counts: Mapping[str, int], spent_usd: float, spent_credits: float) -> None:
        self.counts = dict(counts)

    def notice(self, message: str) -> None:
        self._write(message)

    def stop(self) -> None:
        pass


class RichProgress:
    """A live progress bar on a terminal (rich), with failures printed above it."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console if console is not None else Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}"),
            TextColumn("[red]failed {task.fields[failed]}"),
            TextColumn("{task.fields[spend]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[live]}"),
            console=self.console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._base_done = 0
        self._percents: dict[str, float] = {}

    def start(self, total: int, counts: Mapping[str, int]) -> None:
        self._progress.start()
        self._base_done = _done(counts)
        self._task = self._progress.add_task(
            "jobs", total=total - counts.get("skipped", 0), completed=_done(counts),
            running=_running(counts), failed=counts.get("failed", 0),
            spend=spend(0.0, 0.0), live="")

    def job_state(self, name: str, state: str, detail: str = "") -> None:
        if state in ("failed", "unknown", "cancelled"):
            from rich.markup import escape

            name, detail = escape(name), escape(detail)
            style = "red" if state == "failed" else "yellow"
            tail = f" — {detail}" if detail else ""
            self._progress.console.print(f"[{style}]{state}[/] {name}{tail}", markup=True,
                                         highlight=False)

    def update(self, counts: Mapping[str, int], spent_usd: float, spent_credits: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=_done(counts),
                                  running=_running(counts), failed=counts.get("failed", 0),
                                  spend=spend(spent_usd, spent_credits))

    def task_progress(self, name: str, percent: float | None) -> None:
        """Progress pushed by the host for one task in flight (None: it left)."""
        if percent is None:
            if self._percents.pop(name, None) is None:
                return
        else:
            self._percents[name] = percent
        if self._task is not None:
            from rich.markup import escape

            self._progress.update(self._task, live=escape(live_line(self._percents)))

    def notice(self, message: str) -> None:
        from rich.markup import escape

        self._progress.console.print(f"[bold yellow]{escape(message)}[/]", markup=True,
                                     highlight=False)

    def stop(self) -> None:
        self._progress.stop()
