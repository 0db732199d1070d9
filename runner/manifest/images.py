"""Reference images: resolve manifest entries to :class:`~runner.jobs.ImageRef` values.

An entry is an http(s) URL, or a path or glob relative to the manifest's folder. A local
file must exist, be a regular file and start like a PNG, JPEG or WEBP image; it is read
once per expansion to get its content sha256 (which, not its path, goes into job keys).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from runner.jobs import ImageRef

_GLOB_CHARS = re.compile(r"[*?\[]")
SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def image_kind(head: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` from a file's first bytes; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def is_url(entry: str) -> bool:
    return "://" in entry


def looks_like_set_name(entry: str) -> bool:
    return bool(SET_NAME.match(entry))


class ImageProblem(Exception):
    """An entry that does not resolve to usable images."""


class ImageResolver:
    """Resolves entries relative to ``base_dir``; hashes and sniffs each file once."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._files: dict[str, tuple[str, str]] = {}  # abs path → (sha256, kind)
        self._entries: dict[str, tuple[ImageRef, ...]] = {}

    def file(self, rel: str, path: Path) -> ImageRef:
        key = str(path)
        known = self._files.get(key)
        if known is None:
            if not path.exists():
                raise ImageProblem(f"no such file {rel!r} (looked in {path.parent})")
            if path.is_dir():
                raise ImageProblem(f"{rel!r} is a folder, not an image; to use the images "
                                   f"in it write a glob such as {rel.rstrip('/')}/*.png")
            if not path.is_file():
                raise ImageProblem(f"{rel!r} is not a regular file")
            digest = hashlib.sha256()
            try:
                with path.open("rb") as fh:
                    head = fh.read(65536)
                    kind = image_kind(head)
                    if kind is None:
                        raise ImageProblem(f"{rel!r} is not a PNG, JPEG or WEBP image (its "
                                           f"first bytes say otherwise)")
                    digest.update(head)
                    while block := fh.read(1 << 20):
                        digest.update(block)
            except OSError as exc:
                raise ImageProblem(f"cannot read {rel!r}: {exc.strerror}") from None
            known = (digest.hexdigest(), kind)
            self._files[key] = known
        return ImageRef(ref=rel, path=key, sha256=known[0])

    def resolve(self, entry: str) -> tuple[ImageRef, ...]:
        """A URL, path or glob → its images (a glob's matches sorted); raises ImageProblem."""
        cached = self._entries.get(entry)
        if cached is not None:
            return cached
        refs = self._resolve(entry)
        self._entries[entry] = refs
        return refs

    def _resolve(self, entry: str) -> tuple[ImageRef, ...]:
        if is_url(entry):
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ImageProblem(f"{entry!r}: only http:// and https:// image URLs are "
                                   f"supported")
            return (ImageRef(ref=entry, url=entry),)
        if "\x00" in entry:
            raise ImageProblem("a path cannot contain a NUL character")
        if _GLOB_CHARS.search(entry):
            pattern = os.path.join(str(self.base_dir), entry)
            matches = sorted(glob.glob(pattern, recursive=True))
            files = [Path(m) for m in matches if os.path.isfile(m)]
            if not files:
                raise ImageProblem(f"glob {entry!r} matches no file (searched from "
                                   f"{self.base_dir})")
            out = []
            for f in files:
                try:
                    rel = f.relative_to(self.base_dir).as_posix()
                except ValueError:
                    rel = f.as_posix()
                out.append(self.file(rel, f.resolve()))
            return tuple(out)
        path = self.base_dir / entry
        return (self.file(entry, path.resolve()),)
