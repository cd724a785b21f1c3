"""Printer faults end to end: hwsim and the firmware as two processes, driven as a person
would. A sale is complete when its outcome is journaled and shown, whatever the printer
does; its receipt waits in the durable print queue and prints, marked as delayed, when
the printer is back. Each case ends with the money invariant."""

from __future__ import annotations

import pathlib
import signal
import sqlite3
import time

from tests.invariants import wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"
TRACK2 = f"{PAN}=3012"
DELAYED = "** DELAYED PRINT **"
# the printer is checked again within a second while a fault lasts
OVERRIDES = {"printer": {"retry_max": 1.0}}


def _journal(rig: Rig, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute(sql)]
    finally:
        db.close()


def _queued(rig: Rig) -> int:
    return int(_journal(rig, "SELECT count(*) FROM print_queue")[0][0])


def _no_card_data_at_rest(rig: Rig) -> None:
    for path in rig.state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PAN.encode() not in data, f"full card number in {path.name}"
            assert TRACK2.encode() not in data, f"track data in {path.name}"


def _wait_receipt_with(rig: Rig, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in rig.hw.receipts() if text in r]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no receipt with {text!r}: {rig.hw.receipts()!r}\n"
                                 + rig.log()[-2000:])
        time.sleep(0.05)


def test_paper_runs_out_during_an_approved_sale(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start()
        rig.hw.printer_fault(slow_seconds=0.05)  # the receipt takes over a second
        rig.sale("4250", PAN)
        rig.hw.wait_display("PRINTING", timeout=10)
        rig.hw.printer_fault(paper_out=True)  # the roll ends while it prints
        started = time.monotonic()
        rows = rig.hw.wait_display("PAPER OUT", timeout=5)
        assert rows[0].startswith("APPROVED"), rows  # the outcome stands
        assert time.monotonic() - started < 5.0  # found by the driver's check while printing
        assert rig.hw.receipts() == []  # nothing was cut off
        assert _queued(rig) == 1
        assert _journal(rig, "SELECT status, receipt_printed FROM sales") == [("APPROVED", 0)]

        # the terminal goes on selling while the paper is out: at once, no printing wait
        rig.hw.press("OK")
        rig.wait_idle()
        lost = rig.hw.printer_state()["discarded_cuts"]  # the rest of the first receipt
        rig.sale("1100", PAN)
        rows = rig.hw.wait_display("PAPER OUT", timeout=10)
        assert rows[0].startswith("APPROVED"), rows
        assert _queued(rig) == 2
        assert rig.hw.printer_state()["discarded_cuts"] == lost  # the second was never sent

        rig.hw.printer_clear()
        rig.hw.printer_load_paper()
        first = _wait_receipt_with(rig, "EUR 42.50")
        second = _wait_receipt_with(rig, "EUR 11.00")
        for receipt in (first, second):
            assert receipt.splitlines()[0].strip() == DELAYED, receipt
            assert "APPROVED" in receipt and "476173******0010" in receipt
        assert rig.hw.receipts().index(first) < rig.hw.receipts().index(second)  # in order
        deadline = time.monotonic() + 5
        while _queued(rig) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _queued(rig) == 0
        assert _journal(rig, "SELECT receipt_printed FROM sales") == [(1,), (1,)]
        assert sum(e["charged"] for e in rig.hw.ledger()) == 2
        wait_and_check(rig)
        _no_card_data_at_rest(rig)


def test_cover_open_during_a_sale_and_a_restart_before_it_closes(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start()
        rig.hw.printer_fault(cover_open=True)
        rig.sale("2300", PAN)
        rows = rig.hw.wait_display("PRINTER COVER OPEN", timeout=10)
        assert rows[0].startswith("APPROVED"), rows
        assert rig.hw.receipts() == [] and rig.hw.printer_state()["discarded_cuts"] == 0
        rig.hw.press("OK")
        rig.wait_idle()

        # a restart with the receipt still waiting: it stays queued, no copy is printed
        assert rig.kill_fw(signal.SIGTERM) == 0
        rig.start_fw()
        rows = rig.wait_idle()
        assert not any("LAST SALE" in r for r in rows), rows
        assert _queued(rig) == 1

        rig.hw.printer_fault(cover_open=False)
        receipt = _wait_receipt_with(rig, "EUR 23.00")
        assert receipt.splitlines()[0].strip() == DELAYED and "*** COPY ***" not in receipt
        time.sleep(2.5)  # time for any second print of it to show up
        assert [r for r in rig.hw.receipts() if "EUR 23.00" in r] == [receipt]
        assert _queued(rig) == 0
        wait_and_check(rig)
        _no_card_data_at_rest(rig)


def test_a_printer_that_stops_answering_never_holds_up_a_sale(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start()
        rig.hw.printer_fault(mute=True)  # switched off behind its interface
        rig.sale("1800", PAN)
        rig.hw.wait_display("APPROVED", timeout=10)
        started = time.monotonic()
        rows = rig.hw.wait_display("PRINTER OFFLINE", timeout=5)
        assert rows[0].startswith("APPROVED"), rows
        # one status request's 2 s timeout (with room for a loaded machine), far from the
        # 20 s a hung print may take before it is given up
        assert time.monotonic() - started < 5.0
        rig.hw.press("OK")
        rig.wait_idle()
        rig.hw.printer_clear()
        receipt = _wait_receipt_with(rig, "EUR 18.00")
        assert receipt.splitlines()[0].strip() == DELAYED
        wait_and_check(rig)
