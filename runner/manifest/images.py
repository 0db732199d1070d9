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
import stat
from pathlib import Path
from urllib.parse import urlsplit

from runner.jobs import ImageRef
from runner.media import sniff_accepted

_GLOB_CHARS = re.compile(r"[*?\[]")
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # the hosts' limit for one reference image
SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def is_url(entry: str) -> bool:
    return "://" in entry


def looks_like_set_name(entry: str) -> bool:
    return bool(SET_NAME.match(entry))


def path_exists(path: Path) -> bool:
    """``path.exists()``, but False for a name the system refuses (too long, say)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _real(path: Path) -> Path:
    """The absolute path with symbolic links resolved, as far as they resolve."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: let stat() say so
        return path.absolute()


class ImageProblem(Exception):
    """An entry that does not resolve to usable images."""


class ImageResolver:
    """Resolves entries relative to ``base_dir``; hashes and sniffs each file once."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._files: dict[str, tuple[str, str]] = {}  # abs path → (sha256, content type)
        self._entries: dict[str, tuple[ImageRef, ...]] = {}

    def file(self, rel: str, path: Path) -> ImageRef:
        key = str(path)
        known = self._files.get(key)
        if known is None:
            try:
                st = path.stat()
            except FileNotFoundError:
                raise ImageProblem(f"no such file {rel!r} (looked in {path.parent})") from None
            except OSError as exc:  # a name too long, a symbolic link loop, no permission
                raise ImageProblem(f"cannot use {rel!r}: {exc.strerror or exc}") from None
            if stat.S_ISDIR(st.st_mode):
                raise ImageProblem(f"{rel!r} is a folder, not an image; to use the images "
                                   f"in it write a glob such as {rel.rstrip('/')}/*.png")
            if not stat.S_ISREG(st.st_mode):
                raise ImageProblem(f"{rel!r} is not a regular file")
            if st.st_size > MAX_IMAGE_BYTES:  # refused before reading a byte of it
                raise ImageProblem(f"{rel!r} is {st.st_size / 1048576:,.1f} MiB; a reference "
                                   f"image may be at most {MAX_IMAGE_BYTES // 1048576} MiB: "
                                   f"resize or recompress it")
            digest = hashlib.sha256()
            try:
                with path.open("rb") as fh:
                    head = fh.read(65536)
                    kind = sniff_accepted(head)
                    if kind is None:
                        raise ImageProblem(f"{rel!r} is not a PNG, JPEG or WEBP image (its "
                                           f"first bytes say otherwise)")
                    digest.update(head)
                    while block := fh.read(1 << 20):
                        digest.update(block)
            except OSError as exc:
                raise ImageProblem(f"cannot read {rel!r}: {exc.strerror}") from None
            known = (digest.hexdigest(), kind[0])
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
            try:
                parts = urlsplit(entry)
            except ValueError as exc:  # e.g. an unclosed [IPv6 address
                raise ImageProblem(f"{entry!r} is not a valid URL: {exc}") from None
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
                out.append(self.file(rel, _real(f)))
            return tuple(out)
        path = self.base_dir / entry
        return (self.file(entry, _real(path)),)
