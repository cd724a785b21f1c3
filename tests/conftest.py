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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup` sends an `xdist_group` to one worker by a suffix pytest-xdist puts
    on each test's id (`...@group`). Where that suffix does not take (pytest 9.2 with
    pytest-xdist 3.8), the groups would be spread over the workers without a word, and
    the tests that share a Debian root or a browser would clash: stop instead."""
    if not (hasattr(config, "workerinput") and config.getvalue("loadgroup")):
        return
    lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group")
            and item.nodeid.rfind("@") <= item.nodeid.rfind("]")]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup does not group tests with this pytest {pytest.__version__}: "
            f"{len(lost)} tests marked xdist_group have no group in their id (first: "
            f"{lost[0]}); install the pytest pyproject.toml asks for")


@pytest.fixture
def rig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    """hwsim and the firmware running, the firmware ready for a sale."""
    r = Rig(tmp_path)
    try:
        yield r.start()
    finally:
        r.stop()


# the fleet tests' private Mosquitto and its console client (tests/fleetrig.py)
from tests.fleetrig import broker, console  # noqa: E402, F401
