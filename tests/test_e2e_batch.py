"""The batch close end to end: hwsim and posterm as two processes, driven at the keypad.

A close from the menu in balance, one out of balance with the batch upload, the X
report and the reprint of the last Z, and the daily close that waits for a sale in
progress. Each ends with the money invariant and the batch invariant (a closed
batch's totals equal the host ledger's; each batch closed once).
"""

from __future__ import annotations

import pathlib
import sqlite3
import time
from datetime import datetime, timedelta

import pytest

from firmware.runtime.operator import hash_pin
from tests.invariants import check_batches, wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"
OPEN = {"operator": {"protect": []}}  # no PIN asked: the close itself is under test


def _approved_sale(rig: Rig, digits: str) -> None:
    rig.sale(digits, PAN)
    rig.hw.wait_display("APPROVED")
    rig.wait_idle()


def _merchant_menu(rig: Rig) -> None:
    rig.wait_idle()
    rig.hw.press("F1")
    rig.hw.wait_display("1 LAST")
    rig.hw.press("F1")
    rig.hw.wait_display("8 CLOSE")


def _close_from_menu(rig: Rig, pin: str | None = None) -> None:
    _merchant_menu(rig)
    rig.hw.press("8")
    if pin is not None:
        rig.hw.wait_display("PIN")
        rig.hw.press(*pin)
        rig.hw.press("OK")
    rig.hw.wait_display("CLOSE BATCH?")
    rig.hw.press("OK")


def _closes(rig: Rig) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT * FROM batch_closes ORDER BY batch"))
    finally:
        db.close()


def _check_all(rig: Rig) -> None:
    wait_and_check(rig)
    problems = check_batches(rig.journal_path, rig.hw.batches(), "TERM0001")
    assert problems == [], "\n".join(problems)


def test_close_in_balance_from_the_menu_with_the_pin(tmp_path: pathlib.Path) -> None:
    overrides = {"operator": {"pin_hash": hash_pin("4321"), "protect": ["close"]}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start()
        _approved_sale(rig, "1250")
        _approved_sale(rig, "2000")
        _close_from_menu(rig, pin="4321")
        rows = rig.hw.wait_display("BATCH 1 CLOSED", timeout=15)
        assert "IN BALANCE" in " ".join(rows)
        z = rig.wait_receipts(3)[-1]
        assert "Z REPORT - BATCH CLOSED" in z and "IN BALANCE" in z
        assert "PURCHASES 2" in z and "EUR 32.50" in z
        assert "4321" not in rig.log()
        [close] = _closes(rig)
        assert (close["state"], close["balanced"], close["purchases"]) == ("closed", 1, 2)
        assert [b["closed"] for b in rig.hw.batches()] == [True]
        # the next sale is in batch 2, invoice 1
        _approved_sale(rig, "300")
        receipt = rig.wait_receipts(4)[-1]
        assert "BATCH 000002" in receipt and "INVOICE 000001" in receipt
        _check_all(rig)


def test_out_of_balance_uploads_the_batch_and_the_report_says_so(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:
        rig.start()
        for digits in ("1000", "2000", "3000"):
            _approved_sale(rig, digits)
        rig.hw.host_out_of_balance(0)  # the host disagrees, even after the upload
        _close_from_menu(rig)
        rows = rig.hw.wait_display("BATCH 1 CLOSED", timeout=20)
        assert "OUT OF BALANCE" in " ".join(rows) and "CALL HELP DESK" in " ".join(rows)
        z = rig.wait_receipts(4)[-1]
        assert "OUT OF BALANCE - CALL HELP DESK" in z and "BATCH UPLOADED" in z
        mtis = [m["mti"] for m in rig.hw.messages()]
        assert mtis.count("0320") == 3 and mtis.count("0500") == 2
        record = rig.hw.batches()[0]
        assert [c["processing_code"] for c in record["closes"]] == ["920000", "960000"]
        assert all(u["status"] == "matched" for u in record["uploads"])
        rig.hw.host_out_of_balance_clear()
        rig.hw.press("OK")
        rows = rig.wait_idle()
        assert "OUT OF BALANCE" in " ".join(rows)  # kept on the idle screen as a notice
        _check_all(rig)


def test_x_report_and_reprint_of_the_last_z(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:
        rig.start()
        _merchant_menu(rig)
        rig.hw.press("9")
        rig.hw.wait_display("NO CLOSED BATCH")
        rig.hw.press("CANCEL")
        _approved_sale(rig, "1500")
        rig.sale("505", PAN)  # declined: not in the totals
        rig.hw.wait_display("DECLINED")
        rig.wait_idle()
        _merchant_menu(rig)
        rig.hw.press("7")
        x = rig.wait_receipts(3)[-1]
        assert "X REPORT - BATCH NOT CLOSED" in x and "SALES 1" in x and "EUR 15.00" in x
        assert rig.hw.batches() == []  # nothing was closed
        rig.hw.press("CANCEL")
        _close_from_menu(rig)
        rig.hw.wait_display("BATCH 1 CLOSED", timeout=15)
        z = rig.wait_receipts(4)[-1]
        rig.hw.press("OK")
        _merchant_menu(rig)
        rig.hw.press("9")
        again = rig.wait_receipts(5)[-1]
        assert "*** REPRINT ***" in again and z in again
        _check_all(rig)


@pytest.mark.skipif(datetime.now().strftime("%H:%M") >= "23:57",
                    reason="the scheduled minute would fall on the next day")
def test_scheduled_close_waits_for_the_sale_in_progress(tmp_path: pathlib.Path) -> None:
    if datetime.now().strftime("%H:%M") == "23:59":  # "00:00" would be due at once
        time.sleep(61 - datetime.now().second)
    boundary = (datetime.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)
    at = boundary.strftime("%H:%M")
    overrides = {"operator": {"close_time": at}, "timeouts": {"card": 120}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start()
        _approved_sale(rig, "1000")
        rig.hw.wait_display("ENTER AMOUNT")
        rig.key_amount("2500")  # a sale in progress: waiting for the card
        while datetime.now() < boundary:  # (a comparison of datetimes: midnight-safe)
            time.sleep(0.5)
        time.sleep(3)  # the schedule polls every second: it would have asked by now
        assert "SWIPE CARD" in " ".join(rig.hw.display())
        assert _closes(rig) == []
        rig.hw.swipe(PAN)
        rig.hw.wait_display("APPROVED")
        rows = rig.hw.wait_display("BATCH 1 CLOSED", timeout=20)
        assert "IN BALANCE" in " ".join(rows)
        [close] = _closes(rig)
        assert close["scheduled"] == 1 and close["purchases"] == 2
        assert "ask" in rig.log() or "batch close" in rig.log()
        rig.wait_idle()
        time.sleep(2.5)  # done for today: not asked again
        assert len(_closes(rig)) == 1
        _check_all(rig)
