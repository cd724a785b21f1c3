"""Refunds and voids under every host fault, end to end through hwsim.

A refund's unknown outcome is handled exactly as a sale's (reversal, never a second
refund); a void is repeated as 0401 until an 0410 ends it. Each test ends with the
money invariant (tests/invariants.py).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.invariants import wait_and_check
from tests.rig import Rig
from tests.test_e2e_refund_void import PIN_HASH, function, refund, void

OVERRIDES = {"operator": {"pin_hash": PIN_HASH},
             "offline": {"floor_limit": 5000, "total_limit": 20000, "down_after": 1}}


@pytest.fixture()
def rig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    with Rig(tmp_path, overrides=OVERRIDES) as r:
        r.start()
        r.wait_online()
        yield r


def result(rig: Rig, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r.rstrip() for r in rig.hw.display()]
        if rows[0].startswith(("REFUND APPROVED", "NO RESPONSE", "NOT COMPLETED", "DECLINED",
                               "APPROVED")):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no result: {rig.hw.display()}")


# fault -> (parameters, what the refund ends as, is the customer credited)
REFUND_FAULTS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "late": ({"seconds": 4.0}, "NO RESPONSE", False),  # after the 2 s response timeout
    "swallow": ({}, "NO RESPONSE", False),
    "drop_after_post": ({}, "NO RESPONSE", False),
    "drop_before_read": ({}, "NO RESPONSE", False),  # written: it may have arrived
    "malformed": ({}, "NO RESPONSE", False),
    "busy": ({"code": "96"}, "REFUND APPROVED", True),  # retried with a new STAN
    "decline": ({"code": "05"}, "DECLINED", False),
}


@pytest.mark.parametrize("kind", sorted(REFUND_FAULTS))
def test_refund_under_each_host_fault(rig: Rig, kind: str) -> None:
    params, outcome, credited = REFUND_FAULTS[kind]
    rig.hw.host_fault(kind, **params)
    refund(rig, "900")
    rows = result(rig)
    assert rows[0] == outcome, rows
    if outcome == "NO RESPONSE":
        assert rows[2] == "NOT CREDITED", rows
    wait_and_check(rig, timeout=30)
    ledger = [e for e in rig.hw.ledger() if e["kind"] == "refund"]
    assert sum(1 for e in ledger if e["credited"]) == (1 if credited else 0), ledger
    assert not any(e["charged"] for e in ledger)


def test_refund_with_the_host_down_is_never_approved_offline(rig: Rig) -> None:
    rig.hw.host_down()
    refund(rig, "900")
    rows = result(rig)
    assert rows[:3] == ["NOT COMPLETED", "HOST OFFLINE", "REFUND NEEDS HOST"], rows
    rows = rig.hw.wait_display("NOT CREDITED")  # once its slip is printed
    assert rows[3].startswith("NOT CREDITED"), rows
    rig.hw.host_up()
    wait_and_check(rig)
    assert rig.hw.ledger() == []


@pytest.mark.parametrize("kind", ["swallow", "drop_after_post", "busy"])
def test_void_is_repeated_as_0401_until_the_host_answers(rig: Rig, kind: str) -> None:
    rig.sale("1250")
    assert result(rig)[0] == "APPROVED"
    rig.hw.press("CANCEL")
    rig.hw.host_fault(kind, mti="0400", count=2, **({"code": "96"} if kind == "busy" else {}))
    void(rig)
    rig.hw.press("OK")
    rig.hw.wait_display("VOIDED", timeout=10)  # journaled: it will reach the host
    wait_and_check(rig, timeout=40)
    (entry,) = rig.hw.ledger()
    assert entry["voided"] and not entry["charged"]
    mtis = [m["mti"] for m in rig.hw.messages() if m["mti"] in ("0400", "0401")]
    assert mtis[0] == "0400" and len(mtis) >= 2, mtis
    if kind != "busy":  # a written transmission whose answer was lost is repeated as 0401
        assert "0401" in mtis, mtis


def test_void_of_an_offline_sale_already_uploaded(rig: Rig) -> None:
    rig.hw.host_down()
    rig.sale("2000")
    assert result(rig)[0] == "APPROVED OFFLINE"
    rig.hw.press("CANCEL")
    rig.hw.host_up()
    rig.wait_online()
    wait_and_check(rig)  # the advice is accepted: charged at the host
    (entry,) = rig.hw.ledger()
    assert entry["charged"]
    void(rig)
    rig.hw.press("OK")
    rig.hw.wait_display("VOIDED", timeout=10)
    wait_and_check(rig)
    (entry,) = rig.hw.ledger()
    assert entry["voided"] and not entry["charged"]
    voids = [m for m in rig.hw.messages() if m["mti"] == "0400"]
    assert len(voids) == 1


def test_void_under_a_pin_lock_is_refused(rig: Rig) -> None:
    rig.sale("1250")
    assert result(rig)[0] == "APPROVED"
    rig.hw.press("CANCEL")
    for said in ("WRONG PIN - 2 LEFT", "WRONG PIN - 1 LEFT", "LOCKED FOR"):
        function(rig, "6", pin="0000")
        rig.hw.wait_display(said, timeout=10)
        rig.hw.press("CANCEL")
    function(rig, "6")  # the right PIN, but locked
    rig.hw.wait_display("LOCKED FOR", timeout=10)
    wait_and_check(rig)
    (entry,) = rig.hw.ledger()
    assert entry["charged"] and not entry["voided"]
