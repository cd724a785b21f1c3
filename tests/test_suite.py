"""The test suite's own machinery: the loadgroup guard in conftest.py and rig.wait_until."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import pytest_collection_modifyitems
from tests.rig import wait_until


class _Config:
    def __init__(self, *, worker: bool, loadgroup: bool) -> None:
        if worker:
            self.workerinput: dict[str, Any] = {}
        self.loadgroup = loadgroup

    def getvalue(self, name: str) -> Any:
        return getattr(self, name)


def _item(nodeid: str, group: str | None) -> Any:
    mark = pytest.mark.xdist_group(group).mark if group else None
    return SimpleNamespace(nodeid=nodeid, get_closest_marker=lambda name: mark)


def test_a_group_that_lost_its_suffix_stops_the_worker() -> None:
    items = [_item("tests/test_a.py::test_one", None),
             _item("tests/test_b.py::test_two[x@y]", "debian-root")]
    with pytest.raises(pytest.UsageError, match=r"does not group.*test_two\[x@y\]"):
        pytest_collection_modifyitems(_Config(worker=True, loadgroup=True), items)


def test_grouped_ids_and_other_runs_pass() -> None:
    grouped = [_item("tests/test_a.py::test_one", None),
               _item("tests/test_b.py::test_two[x]@debian-root", "debian-root")]
    pytest_collection_modifyitems(_Config(worker=True, loadgroup=True), grouped)
    lost = [_item("tests/test_b.py::test_two", "debian-root")]
    pytest_collection_modifyitems(_Config(worker=False, loadgroup=True), lost)  # controller
    pytest_collection_modifyitems(_Config(worker=True, loadgroup=False), lost)  # -n, no groups


def test_wait_until_gives_the_value_as_soon_as_it_comes() -> None:
    started = time.monotonic()
    looks = iter([0, 0, 7])
    assert wait_until(lambda: next(looks), 5, "never") == 7
    assert time.monotonic() - started < 1


def test_wait_until_says_what_it_waited_for() -> None:
    state = {"rows": ["SWIPE CARD"]}
    with pytest.raises(AssertionError, match=r"not within 0.1 s: still \['SWIPE CARD'\]"):
        wait_until(lambda: False, 0.1, lambda: f"still {state['rows']}")
