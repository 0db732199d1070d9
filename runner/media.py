"""Image types: what a file's first bytes say it is, and which types seedbatch works with.

:func:`sniff_image` reads the magic bytes of PNG, JPEG, WebP, GIF, BMP, TIFF, AVIF and
HEIC into ``(content type, extension)``. Seedream takes and returns three of them,
:data:`ACCEPTED_TYPES`: a reference image must be one (the manifest checks local files,
the provider clients what they upload), and an output is kept only as one, named by
the extension its bytes call for (never by its URL). :data:`OUTPUT_EXTS` are those
extensions, as plan.json lists each output's possible names.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# content type → file extension
ACCEPTED_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
OUTPUT_EXTS = tuple(ACCEPTED_TYPES.values())


def png_size(head: bytes) -> tuple[int, int] | None:
    """A PNG's pixel size from its first 24 bytes (its first chunk, IHDR: RFC 2083), or None
    when they are not a PNG's."""
    if len(head) >= 24 and head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    return None


def sniff_image(head: bytes) -> tuple[str, str] | None:
    """(content type, extension) of an image from its first bytes (12 are enough), or None."""
    if head.startswith(PNG_SIGNATURE):
        return "image/png", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif", "gif"
    if head.startswith(b"BM"):
        return "image/bmp", "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff", "tiff"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return ("image/avif", "avif") if head[8:12] == b"avif" else ("image/heic", "heic")
    return None


def sniff_accepted(head: bytes) -> tuple[str, str] | None:
    """:func:`sniff_image`, but None for a type outside :data:`ACCEPTED_TYPES`."""
    kind = sniff_image(head)
    return kind if kind is not None and kind[0] in ACCEPTED_TYPES else None
