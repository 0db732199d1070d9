"""Every error seedbatch raises on purpose, and the exit codes (a contract scripts rely on).

Errors become messages and exit codes only at the command-line edge (``runner.cli``);
everything below raises one of these::

    SeedbatchError                      exit 1 unless said otherwise
    ├── ManifestError                   exit 2 — one located problem: FILE:LINE:COL: msg (at $.path)
    ├── ManifestErrors                  exit 2 — every problem found in a manifest, at once
    ├── ConfigError                     exit 2 — missing credential variable, refused base URL, …
    ├── RunDirError                     exit 2 — not a run directory, or one that is locked
    ├── StoreError                      exit 1 — the output store failed (never fails a job)
    └── ProviderError                   what a remote API answered (or failed to)
        ├── FatalProviderError          exit 3 — stops the whole run
        │   ├── AuthError               wrong key, secret or signature
        │   └── InsufficientBalance     no money or credits left
        ├── TransientError              nothing was created: the same request may be sent again
        │   ├── RateLimited             HTTP 429
        │   ├── ConcurrencyLimited      the account's task limit: wait for a slot
        │   ├── ServerError             HTTP 5xx, or an error envelope that says "try again"
        │   └── ConnectFailed           the request never left (refused connection, DNS, …)
        ├── JobRejected                 refused for this job (validation): fail it, no retry
        ├── CancelUnsupported           the host cannot stop a task: it runs on and is billed
        └── UnknownOutcome              the request was sent but no answer came back: a submit
                                        in this state may have created (and billed) a task
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1  # some jobs failed (or `verify` found damage)
EXIT_INPUT = 2  # bad input: manifest, flags, credentials, run directory
EXIT_FATAL = 3  # a fatal provider error (credentials refused, balance)
EXIT_INTERRUPTED = 130  # Ctrl-C, or `seedbatch cancel`


class SeedbatchError(Exception):
    """Root of every error seedbatch raises on purpose."""

    exit_code: int = EXIT_FAILED


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a manifest a problem is: file, 1-based line and column, JSON path."""

    file: str
    line: int = 1
    col: int = 1
    path: str = "$"


class ManifestError(SeedbatchError):
    """One problem in a manifest, located to its file, line and column."""

    exit_code = EXIT_INPUT

    def __init__(
        self,
        message: str,
        file: str = "<manifest>",
        line: int = 1,
        col: int = 1,
        path: str = "$",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.path = path

    @classmethod
    def at(cls, message: str, where: Location) -> ManifestError:
        return cls(message, where.file, where.line, where.col, where.path)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message} (at {self.path})"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.message)


class ManifestErrors(SeedbatchError):
    """Every problem found in one or more manifests, reported together."""

    exit_code = EXIT_INPUT

    def __init__(self, problems: list[ManifestError]) -> None:
        self.problems = sorted(problems, key=ManifestError.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(SeedbatchError):
    """Configuration that cannot work: a missing variable, a refused URL, a bad flag."""

    exit_code = EXIT_INPUT


class RunDirError(SeedbatchError):
    """A run directory that is missing, damaged or in use by another process."""

    exit_code = EXIT_INPUT


class StoreError(SeedbatchError):
    """The shared output store could not be read or written, or served damaged bytes.

    A run never fails for it: uploads are retried, then reported (``seedbatch push``
    finishes them); a store hit that cannot be read is submitted instead."""


class ProviderError(SeedbatchError):
    """Something a remote API answered, or failed to answer."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    def __str__(self) -> str:
        bits = [b for b in (self.provider, self.message) if b]
        detail = []
        if self.http_status is not None:
            detail.append(f"HTTP {self.http_status}")
        if self.code is not None:
            detail.append(f"code {self.code}")
        text = ": ".join(bits)
        return f"{text} ({', '.join(detail)})" if detail else text


class FatalProviderError(ProviderError):
    """An answer that makes every further call pointless: the whole run stops (exit 3)."""

    exit_code = EXIT_FATAL


class AuthError(FatalProviderError):
    """The provider refused the credentials or the signature."""


class InsufficientBalance(FatalProviderError):
    """The account has no money or credits left for this work."""


class TransientError(ProviderError):
    """The provider surely created nothing: the same request may be sent again later."""


class RateLimited(TransientError):
    """HTTP 429: too many requests."""


class ConcurrencyLimited(TransientError):
    """The account's concurrent-task limit is reached (e.g. a host's "too many tasks" code);
    wait for a slot."""


class ServerError(TransientError):
    """HTTP 5xx, or an error envelope that asks to try again."""


class ConnectFailed(TransientError):
    """The request never reached the provider (refused connection, name lookup failed)."""


class JobRejected(ProviderError):
    """The provider refused this job's request (validation): the job fails, no retry."""


class CancelUnsupported(ProviderError):
    """The host has no way to stop a task (or refuses to): it runs to its end and is billed.

    Never a silent success: the job stays attached to its task, its outputs are downloaded
    (by the process that asked to cancel, if it waits, or by ``resume``) and its cost is
    counted."""


class UnknownOutcome(ProviderError):
    """The request was sent but its answer was lost: a submit may have created a task."""
