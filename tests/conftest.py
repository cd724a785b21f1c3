"""Shared test set-up: the project root on sys.path and the end-to-end `rig` fixture."""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.rig import Rig  # noqa: E402

os.environ.setdefault("ESCPOS_CAPABILITIES_PICKLE_DIR", str(ROOT / ".cache" / "escpos"))


@pytest.fixture
def rig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    """hwsim and the firmware running, the firmware ready for a sale."""
    r = Rig(tmp_path)
    try:
        yield r.start()
    finally:
        r.stop()
