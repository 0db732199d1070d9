"""Writing files so that readers see the old content or the new, never half of it.

Every file seedbatch writes whole — plan.json and the manifest copy in a run directory,
report.json and report.html, the lockfile, ``seedbatch report -o FILE`` — goes through
:func:`atomic_write_bytes`: a temporary file beside the target (``.<name>.<random>.tmp``),
written, ``fsync``-ed, then renamed over the target. An existing target's permission bits
are kept; a new file gets ``0o644``. A failed write leaves no temporary file behind.
(Streamed downloads have their own part files: ``runner/execute/download.py``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, line endings as given (no translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, doc: Any) -> None:
    """``doc`` as indented JSON (two spaces, UTF-8 kept as is) and a final newline."""
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
