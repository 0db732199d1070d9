"""Output images: real PNGs whose content shows the prompt.

A gradient background whose colours come from the prompt's hash, the prompt drawn on it
(wrapped, default font) and a caption (model, image number). Same inputs → same bytes.
"""

from __future__ import annotations

import hashlib
import io
import struct
import textwrap
import zlib

from PIL import Image, ImageDraw, ImageFont

SMALL_LONG_SIDE = 256
PAD_CHUNK = b"paDd"  # ancillary, private, safe-to-copy: decoders skip it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def output_size(width: int, height: int, mode: str) -> tuple[int, int]:
    """The rendered size: the requested one (``"full"``) or ~256 px on the long side
    keeping the aspect ratio (``"small"``)."""
    if mode == "full":
        return max(1, width), max(1, height)
    scale = SMALL_LONG_SIDE / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _colours(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5]), digest[6] % 3


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_png(prompt: str, width: int, height: int, caption: str = "") -> bytes:
    """A ``width``×``height`` PNG showing ``prompt`` and ``caption``."""
    first, second, style = _colours(prompt)
    mask = Image.linear_gradient("L") if style != 2 else Image.radial_gradient("L")
    if style == 1:
        mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), first),
                            Image.new("RGB", (width, height), second), mask)
    draw = ImageDraw.Draw(image)
    mean = [(a + b) / 2 for a, b in zip(first, second, strict=True)]
    light = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2] > 140
    ink, halo = ((0, 0, 0), (255, 255, 255)) if light else ((255, 255, 255), (0, 0, 0))

    size = max(8, min(width, height) // 14)
    font = _font(size)
    margin = max(2, size // 2)
    columns = max(4, int((width - 2 * margin) / (size * 0.55)))
    max_lines = max(1, (height - 3 * margin - size) // (size + size // 4))
    lines = textwrap.wrap(prompt, columns) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, columns - 1)] + "…"
    stroke = max(1, size // 12)
    y = margin
    for line in lines:
        draw.text((margin, y), line, font=font, fill=ink, stroke_width=stroke, stroke_fill=halo)
        y += size + size // 4
    if caption:
        draw.text((margin, height - margin - size), caption, font=font, fill=ink,
                  stroke_width=stroke, stroke_fill=halo)

    out = io.BytesIO()
    # big canvases are mostly gradient: fast compression keeps "full" size usable
    image.save(out, format="PNG", compress_level=1 if width * height > 4_000_000 else 6)
    return out.getvalue()


def pad_png(png: bytes, min_bytes: int) -> bytes:
    """``png`` grown to at least ``min_bytes`` with an ancillary chunk before ``IEND``."""
    if min_bytes <= len(png):
        return png
    if not png.startswith(PNG_SIGNATURE) or png[-12:-8] != b"\x00\x00\x00\x00" \
            or png[-8:-4] != b"IEND":
        raise ValueError("not a PNG ending with IEND")
    need = max(0, min_bytes - len(png) - 12)  # 12 = length + type + CRC
    data = b"\x00" * need
    chunk = struct.pack(">I", need) + PAD_CHUNK + data + struct.pack(
        ">I", zlib.crc32(PAD_CHUNK + data) & 0xFFFFFFFF)
    return png[:-12] + chunk + png[-12:]


def make_output(prompt: str, width: int, height: int, *, mode: str, caption: str = "",
                pad_to: int = 0) -> bytes:
    """One output image: rendered at ``output_size`` and padded to ``pad_to`` bytes."""
    w, h = output_size(width, height, mode)
    return pad_png(render_png(prompt, w, h, caption), pad_to)
