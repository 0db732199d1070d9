"""Helpers for the manifest tests: write small manifests and images into tmp_path."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from runner.errors import ManifestError
from runner.jobs import Plan
from runner.manifest import check


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8),
              fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(text, name="m.yaml") → path; the text is dedented."""

    def _write(text: str, name: str = "m.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def problems(write: Callable[..., Path]) -> Callable[[str], list[ManifestError]]:
    """problems(text) → every ManifestError for that manifest (sorted by place)."""

    def _problems(text: str) -> list[ManifestError]:
        path = write(text)
        plan, errors = check(path, display="m.yaml")
        assert (plan is None) == bool(errors)
        return sorted(errors, key=ManifestError.sort_key)

    return _problems


@pytest.fixture
def only(problems: Callable[[str], list[ManifestError]]) -> Callable[[str], ManifestError]:
    """only(text) → the single ManifestError of that manifest (fails if not exactly one)."""

    def _only(text: str) -> ManifestError:
        errors = problems(text)
        assert len(errors) == 1, "\n".join(str(e) for e in errors)
        return errors[0]

    return _only


@pytest.fixture
def plan_of(write: Callable[..., Path]) -> Callable[..., Plan]:
    """plan_of(text, name="m.yaml") → the Plan (fails with every problem if invalid)."""

    def _plan(text: str, name: str = "m.yaml") -> Plan:
        path = write(text, name)
        plan, errors = check(path, display=name)
        assert not errors, "\n".join(str(e) for e in errors)
        assert plan is not None
        return plan

    return _plan


@pytest.fixture
def image(tmp_path: Path) -> Callable[..., Path]:
    """image(relative_path, color=..., fmt="PNG") → a small real image under tmp_path."""

    def _image(rel: str, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(color, fmt=fmt))
        return path

    return _image
