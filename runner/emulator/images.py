"""Output images: real PNGs whose content shows the prompt.

A gradient background whose colours come from the prompt's hash, the prompt drawn on it
(wrapped, default font) and a caption (model, image number). Same inputs → same bytes.

Rendering is most of the emulator's work, so what repeats is kept: each rendering thread's
fonts, the glyph masks of each text drawn (a caption is the same for every output of a
model), the gradients, and the last outputs made (the same prompt at several seeds renders
once). None of it changes a byte of the outputs.
"""

from __future__ import annotations

import hashlib
import io
import struct
import textwrap
import threading
import zlib
from collections import OrderedDict
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from runner.media import PNG_SIGNATURE

SMALL_LONG_SIDE = 256
PAD_CHUNK = b"paDd"  # ancillary, private, safe-to-copy: decoders skip it


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


class _Cache:
    """A thread-safe LRU map holding at most ``entries`` values and ``size`` in total."""

    def __init__(self, entries: int, size: int = 0,
                 measure: Any = lambda _value: 0) -> None:
        self.entries, self.size, self.measure = entries, size, measure
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.held = 0
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        cost = self.measure(value)
        if self.size and cost > self.size:
            return
        with self.lock:
            if key in self.items:
                return
            self.items[key] = value
            self.held += cost
            while len(self.items) > self.entries or (self.size and self.held > self.size):
                _, old = self.items.popitem(last=False)
                self.held -= self.measure(old)


# FreeType's glyph masks, by font size and getmask2's arguments: ImageDraw.text asks for
# one per line of text (two with a stroke); the same text at the same size and place gives
# the same mask. The masks are read, never written, so the threads share them.
_MASKS = _Cache(entries=1024)
# Each rendering thread's fonts by size (a FreeType face is not shared between threads).
_FONTS = threading.local()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] | None = getattr(
        _FONTS, "by_size", None)
    if fonts is None:
        fonts = _FONTS.by_size = {}
    font = fonts.get(size)
    if font is None:
        font = fonts[size] = _load_font(size)
    return font


def _load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()
    if isinstance(font, ImageFont.FreeTypeFont):
        _remember_masks(font, size)
    return font


def _remember_masks(font: ImageFont.FreeTypeFont, size: int) -> None:
    """Make ``font.getmask2`` answer a question it was asked before from :data:`_MASKS`
    (only greyscale masks, the mode ImageDraw uses on RGB images)."""
    render = font.getmask2

    def getmask2(text: Any, mode: str = "", *args: Any, **kwargs: Any) -> Any:
        key = (size, text, mode, args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:  # a list of features, say: not remembered
            return render(text, mode, *args, **kwargs)
        if mode != "L":
            return render(text, mode, *args, **kwargs)
        found = _MASKS.get(key)
        if found is None:
            found = render(text, mode, *args, **kwargs)
            _MASKS.put(key, found)
        return found

    font.getmask2 = getmask2  # type: ignore[method-assign]


# The gradients the backgrounds are blended through, by style and size (read only; at most
# 16 MB of them).
_GRADIENTS = _Cache(entries=64, size=16 * 1024 * 1024,
                    measure=lambda mask: mask.width * mask.height)


def _gradient(style: int, width: int, height: int) -> Image.Image:
    key = (style, width, height)
    mask: Image.Image | None = _GRADIENTS.get(key)
    if mask is None:
        mask = Image.linear_gradient("L") if style != 2 else Image.radial_gradient("L")
        if style == 1:
            mask = mask.transpose(Image.Transpose.ROTATE_90)
        mask = mask.resize((width, height))
        _GRADIENTS.put(key, mask)
    return mask


def render_png(prompt: str, width: int, height: int, caption: str = "") -> bytes:
    """A ``width``×``height`` PNG showing ``prompt`` and ``caption``."""
    first, second, style = _colours(prompt)
    # ``second`` with ``first`` pasted through the gradient: Image.composite's pixels
    image = Image.new("RGB", (width, height), second)
    image.paste(first, None, _gradient(style, width, height))
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
    # zlib's fastest level: half the CPU of its default for a few KB more per output
    image.save(out, format="PNG", compress_level=1)
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


# The last outputs made, by everything they are made from (at most 32 MB of them).
_OUTPUTS = _Cache(entries=256, size=32 * 1024 * 1024, measure=len)


def make_output(prompt: str, width: int, height: int, *, mode: str, caption: str = "",
                pad_to: int = 0) -> bytes:
    """One output image: rendered at ``output_size`` and padded to ``pad_to`` bytes."""
    w, h = output_size(width, height, mode)
    key = (prompt, w, h, caption, pad_to)
    data: bytes | None = _OUTPUTS.get(key)
    if data is None:
        data = pad_png(render_png(prompt, w, h, caption), pad_to)
        _OUTPUTS.put(key, data)
    return data
