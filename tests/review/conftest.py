"""The ``project`` fixture: real runs of a manifest through the emulator (review_support.py)."""

from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(__file__)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from review_support import Project, make_project  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return make_project(tmp_path_factory.mktemp("review"))
