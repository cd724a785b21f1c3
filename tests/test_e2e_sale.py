"""An online sale end to end: firmware and hwsim as separate processes."""

from __future__ import annotations

import sqlite3

import pytest

from tests.rig import Rig

PAN = "4761739001010010"


def test_approved_sale(rig: Rig) -> None:
    rig.sale("1250", PAN)
    rows = rig.hw.wait_display("APPROVED")
    assert any("EUR 12.50" in r for r in rows)
    receipt = rig.wait_receipts(1)[-1]
    assert "POSTERM DEMO SHOP" in receipt and "476173******0010" in receipt
    assert "EUR 12.50" in receipt and "APPROVED" in receipt and "TERM0001" in receipt
    assert PAN not in receipt
    ledger = rig.hw.ledger()
    assert len(ledger) == 1 and ledger[0]["charged"] and ledger[0]["amount"] == 1250
    assert ledger[0]["approval"] in receipt and ledger[0]["rrn"] in receipt
    rig.wait_idle()


@pytest.mark.parametrize("digits,reason", [("1205", "DO NOT HONOUR"),
                                           ("1251", "INSUFFICIENT FUNDS")])
def test_declines_show_their_text(rig: Rig, digits: str, reason: str) -> None:
    rig.sale(digits, PAN)
    rows = rig.hw.wait_display("DECLINED")
    assert any(reason in r for r in rows), rows
    receipt = rig.wait_receipts(1)[-1]
    assert "DECLINED" in receipt and reason in receipt
    assert not any(e["charged"] for e in rig.hw.ledger())


def test_cancel_during_amount_entry(rig: Rig) -> None:
    rig.hw.wait_display("ENTER AMOUNT")
    rig.hw.press("99")
    rig.hw.wait_display("EUR 0.99")
    rig.hw.press("CANCEL")
    rig.hw.wait_display("SALE CANCELLED")
    assert rig.hw.ledger() == [] and rig.hw.receipts() == []


def test_cancel_while_waiting_for_card(rig: Rig) -> None:
    rig.hw.wait_display("ENTER AMOUNT")
    rig.key_amount("500")
    rig.hw.press("CANCEL")
    rig.hw.wait_display("SALE CANCELLED")
    rig.hw.swipe(PAN)  # a late swipe must not start anything
    rig.hw.wait_display("ENTER AMOUNT FIRST")
    assert rig.hw.ledger() == []


def test_bad_swipe_then_good_swipe(rig: Rig) -> None:
    rig.hw.wait_display("ENTER AMOUNT")
    rig.key_amount("700")
    rig.hw.swipe(bad="track2_error")
    rig.hw.wait_display("TRACK 2 NOT READ")
    rig.hw.swipe(bad="noise")
    rig.hw.wait_display("SWIPE CARD")
    rig.hw.swipe(PAN)
    rig.hw.wait_display("APPROVED")
    assert [e["amount"] for e in rig.hw.ledger()] == [700]


def test_restart_keeps_stan_sequence(rig: Rig) -> None:
    rig.sale("100", PAN)
    rig.hw.wait_display("APPROVED")
    rig.wait_receipts(1)
    before = [int(m["stan"]) for m in rig.hw.messages()]
    rig.restart_fw()
    rig.sale("200", PAN)
    rig.hw.wait_display("APPROVED")
    after = [int(m["stan"]) for m in rig.hw.messages()][len(before):]
    assert after and min(after) > max(before), (before, after)
    stans = before + after
    assert len(set(stans)) == len(stans), stans
    sales = rig.hw.ledger()
    assert len(sales) == 2 and int(sales[1]["stan"]) > int(sales[0]["stan"])


def test_journal_and_log_hold_no_full_pan(rig: Rig) -> None:
    rig.sale("1250", PAN)
    rig.hw.wait_display("APPROVED")
    rig.wait_receipts(1)
    rig.kill_fw()
    for path in rig.state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PAN.encode() not in data, path
            assert b"=3012" not in data, path
    assert PAN not in rig.log()
    db = sqlite3.connect(rig.journal_path)
    assert db.execute("SELECT pan_masked FROM sales").fetchone()[0] == "476173******0010"
