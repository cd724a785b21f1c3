"""The batch close end to end: hwsim and posterm as two processes, driven at the keypad.

A close from the menu in balance, one out of balance with the batch upload, the X
report and the reprint of the last Z, and the daily close that waits for a sale in
progress. Each ends with the money invariant and the batch invariant (a closed
batch's totals equal the host ledger's; each batch closed once).
"""

from __future__ import annotations

import math
import os
import pathlib
import sqlite3
import subprocess
import sys
import time

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


# seconds from the firmware's start to its close time: enough to start, sell and key the
# next amount on a loaded machine (the test says so if it was not)
CLOSE_LEAD = 15


def _noon_in(seconds: float) -> tuple[str, float]:
    """A TZ for the firmware under which its local clock reads 12:00:00 in `seconds`
    (rounded up to a whole second), and that moment on this process's monotonic clock:
    the daily close time comes when the test wants it, not at the next minute of the
    wall clock, and never near midnight."""
    wall, mono = time.time(), time.monotonic()
    moment = math.ceil(wall + seconds)
    offset = (12 * 3600 - moment % 86400) % 86400  # local = UTC + offset
    if offset > 12 * 3600:
        offset -= 86400
    sign, size = ("-" if offset >= 0 else "+"), abs(offset)  # POSIX TZ: east is minus
    tz = f"FWT{sign}{size // 3600:02d}:{size % 3600 // 60:02d}:{size % 60:02d}"
    return tz, mono + (moment - wall)


def test_noon_in_gives_a_zone_whose_clock_reads_noon_then() -> None:
    tz, due = _noon_in(1)
    # CLOCK_MONOTONIC is the machine's: the child sleeps until the same moment
    code = (f"import time, datetime; time.sleep(max(0.0, {due!r} - time.monotonic())); "
            "print(datetime.datetime.now().strftime('%H:%M:%S'))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TZ": tz},
                         capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() in ("12:00:00", "12:00:01"), (tz, out.stdout)


def test_scheduled_close_waits_for_the_sale_in_progress(tmp_path: pathlib.Path) -> None:
    overrides = {"operator": {"close_time": "12:00"}, "timeouts": {"card": 120}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start_sim()
        tz, due = _noon_in(CLOSE_LEAD)
        rig.start_fw(env={"TZ": tz})
        _approved_sale(rig, "1000")
        rig.hw.wait_display("ENTER AMOUNT")
        rig.key_amount("2500")  # a sale in progress: waiting for the card
        assert time.monotonic() < due - 1, "the sale came after the close time: raise CLOSE_LEAD"
        # the close time comes, and 3 s more: the schedule wakes at the close time, it
        # would have asked by now
        time.sleep(due - time.monotonic() + 3)
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
