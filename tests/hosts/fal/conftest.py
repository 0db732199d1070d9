from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers module has a name no other test folder uses; appended (not prepended) so it
# never shadows another folder's modules.
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the emulator renders outputs on asyncio's threads
