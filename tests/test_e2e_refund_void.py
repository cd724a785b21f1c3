"""Refunds and voids end to end: hwsim and posterm as real processes, driven at the keypad
and the card reader as a merchant would, each test ending with the money invariant
(tests/invariants.py): credited exactly when REFUND APPROVED was shown, a voided
transaction neither charged nor credited."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest

from firmware.runtime.operator import hash_pin
from tests.invariants import wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"
PIN = "86420135"
PIN_HASH = hash_pin(PIN, n=2**10)  # the smallest N the configuration takes: a fast test


@pytest.fixture()
def rig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    with Rig(tmp_path, overrides={"operator": {"pin_hash": PIN_HASH}}) as r:
        r.start()
        r.wait_online()
        yield r


def function(rig: Rig, digit: str, pin: str = PIN) -> None:
    """Idle -> F1 -> the merchant's function `digit`, the supervisor PIN keyed."""
    rig.wait_idle()
    rig.hw.press("F1")
    rig.hw.wait_display("MENU")
    rig.hw.press(digit)
    rig.hw.wait_display("SUPERVISOR PIN")
    rig.hw.press(pin)
    rows = rig.hw.wait_display("*" * len(pin))
    assert not any(pin in row for row in rows), rows  # masked on the glass
    rig.hw.press("OK")


def refund(rig: Rig, digits: str, pan: str = PAN) -> None:
    function(rig, "5")
    rig.hw.wait_display("REFUND")
    rig.key_amount(digits)
    rig.hw.swipe(pan)


def void(rig: Rig, invoice: str = "") -> list[str]:
    """Void by invoice number ("" = the last transaction): the confirmation screen."""
    function(rig, "6")
    rig.hw.wait_display("INVOICE NO:")
    if invoice:
        rig.hw.press(invoice)
    rig.hw.press("OK")
    return rig.hw.wait_display("OK=VOID")


def new_receipts(rig: Rig, before: int, count: int) -> list[str]:
    return rig.wait_receipts(before + count)[before:]


def test_refund_approved_credits_once_with_two_copies(rig: Rig) -> None:
    before = len(rig.hw.receipts())
    refund(rig, "800")
    rows = rig.hw.wait_display("REFUND APPROVED", timeout=15)
    assert not any(row.startswith("APPROVED") for row in rows), rows
    merchant, customer = new_receipts(rig, before, 2)
    assert "MERCHANT COPY" in merchant and "CUSTOMER COPY" in customer
    for paper in (merchant, customer):
        assert "REFUND APPROVED" in paper and "EUR 8.00" in paper and PAN not in paper
    wait_and_check(rig)
    (entry,) = rig.hw.ledger()
    assert entry["kind"] == "refund" and entry["credited"] and not entry["charged"]
    assert entry["processing_code"] == "200000" and entry["mti"] == "0200"
    assert (entry["batch"], entry["invoice"]) == ("000001", "000001")


def test_refund_with_no_answer_is_reversed_never_credited(rig: Rig) -> None:
    rig.hw.host_fault("swallow")  # credited at the host, the answer never sent
    refund(rig, "700")
    rows = rig.hw.wait_display("NO RESPONSE", timeout=15)
    assert any("NOT CREDITED" in row for row in rows), rows
    wait_and_check(rig)
    assert not any(e["credited"] for e in rig.hw.ledger())
    assert "0400" in [m["mti"] for m in rig.hw.messages()]
    assert sum(1 for m in rig.hw.messages() if m["mti"] == "0200") == 1  # never a 2nd refund


def test_void_of_the_last_sale(rig: Rig) -> None:
    rig.sale("1250")
    rig.hw.wait_display("APPROVED", timeout=15)
    rig.wait_idle()
    before = len(rig.hw.receipts())
    rows = void(rig)
    assert rows[0].startswith("VOID #1?") and "12.50" in rows[1], rows
    rig.hw.press("OK")
    rig.hw.wait_display("VOIDED", timeout=10)
    (slip,) = new_receipts(rig, before, 1)
    assert "VOID OF SALE" in slip and "CUSTOMER NOT CHARGED" in slip and "000001" in slip
    wait_and_check(rig)
    (entry,) = rig.hw.ledger()
    assert entry["voided"] and not entry["charged"]
    voids = [m for m in rig.hw.messages() if m["mti"] in ("0400", "0401")]
    assert len(voids) == 1
    # only once
    rig.hw.press("CANCEL")
    function(rig, "6")
    rig.hw.wait_display("INVOICE NO:")
    rig.hw.press("1", "OK")
    rig.hw.wait_display("ALREADY VOIDED", timeout=10)
    assert PIN not in rig.log()


def test_void_of_a_refund(rig: Rig) -> None:
    refund(rig, "650")
    rig.hw.wait_display("REFUND APPROVED", timeout=15)
    rig.wait_idle()
    rows = void(rig, "1")
    assert "REFUND" in rows[1], rows
    rig.hw.press("OK")
    rig.hw.wait_display("VOIDED", timeout=10)
    slip = rig.wait_receipts(3)[-1]
    assert "VOID OF REFUND" in slip and "REFUND CANCELLED" in slip
    wait_and_check(rig)
    (entry,) = rig.hw.ledger()
    assert entry["voided"] and not entry["credited"]


def test_offline_sale_voided_before_its_advice_left(rig: Rig) -> None:
    rig.hw.host_down()
    rig.sale("2000")
    rig.hw.wait_display("APPROVED OFFLINE", timeout=20)
    rig.hw.press("CANCEL")
    rig.wait_idle()
    before = len(rig.hw.receipts())
    void(rig)
    rig.hw.press("OK")
    rig.hw.wait_display("VOIDED", timeout=10)
    (slip,) = new_receipts(rig, before, 1)
    assert "OFFLINE SALE NEVER SENT" in slip and "CUSTOMER NOT CHARGED" in slip
    rig.hw.host_up()
    rig.hw.press("CANCEL")
    rig.wait_online()
    wait_and_check(rig)
    time.sleep(1.0)  # the forwarder had its chance: nothing of the sale may reach the host
    assert rig.hw.ledger() == []
    assert not any(m["mti"] in ("0220", "0221", "0400") for m in rig.hw.messages())


def test_three_wrong_pins_lock_the_operator_functions(rig: Rig) -> None:
    for left in ("2 LEFT", "1 LEFT"):
        function(rig, "6", pin="1111")
        rig.hw.wait_display(f"WRONG PIN - {left}", timeout=10)
        rig.hw.press("CANCEL")
    function(rig, "6", pin="1111")
    rig.hw.wait_display("LOCKED FOR 15 MIN", timeout=10)
    rig.hw.press("CANCEL")
    rig.restart_fw()  # the lock is in the journal
    rig.wait_online()
    function(rig, "5")
    rig.hw.wait_display("LOCKED FOR", timeout=10)
    log = rig.log()
    assert "operator functions locked" in log and PIN not in log and "1111" not in log
    assert PIN.encode() not in rig.journal_path.read_bytes()


def test_duplicate_guard_remembers_across_a_restart(rig: Rig) -> None:
    rig.sale("1250")
    rig.hw.wait_display("APPROVED", timeout=15)
    rig.restart_fw()  # the guard's memory comes from the journal's keyed PAN hashes
    rig.wait_online()
    rig.sale("1250")
    rig.hw.wait_display("POSSIBLE DUPLICATE", timeout=10)
    rig.hw.press("CANCEL")
    rig.hw.wait_display("CANCELLED", timeout=10)
    rig.wait_idle()
    rig.sale("1250", "5413330089010012")  # another card: no question
    rig.hw.wait_display("APPROVED", timeout=15)
    wait_and_check(rig)
    assert len(rig.hw.ledger()) == 2
    assert PAN.encode() not in rig.journal_path.read_bytes()
