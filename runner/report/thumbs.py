"""Small thumbnails of a run's outputs (Pillow), shared by report.html and grid.png."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

THUMB_PX = 256  # the longest side of an embedded thumbnail
BACKGROUND = (255, 255, 255)


def thumbnail(path: Path, max_px: int = THUMB_PX) -> Image.Image | None:
    """An RGB thumbnail no larger than ``max_px`` on either side, or None if unreadable."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max_px, max_px))  # JPEG: decode at a reduced scale
            img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                flat = Image.new("RGB", rgba.size, BACKGROUND)
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def thumbnails(run_dir: Path, report: Mapping[str, Any],
               max_px: int = THUMB_PX) -> dict[str, Image.Image]:
    """Thumbnail of every output in ``report`` that is a readable image, by report path."""
    found: dict[str, Image.Image] = {}
    for job in report.get("jobs", []):
        for output in job.get("outputs", []):
            rel = output["path"]
            if rel in found:
                continue
            image = thumbnail(run_dir / rel, max_px)
            if image is not None:
                found[rel] = image
    return found


def data_uri(image: Image.Image, quality: int = 78) -> str:
    """``data:image/jpeg;base64,…`` for a thumbnail."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
