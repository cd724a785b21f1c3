"""The X report's numbers against the host's ledger, end to end through hwsim.

A mixed day (online sales, a refund, a void, an offline sale accepted later, one the
host refuses) is printed as an X report; every count and amount on the paper must be
what the host's ledger says, and the batch must then close in balance.
"""

from __future__ import annotations

import pathlib
import re
import time

from tests.invariants import check_batches, wait_and_check
from tests.rig import Rig
from tests.test_e2e_refund_void import PIN, PIN_HASH, function, refund, void

PAN = "4761739001010010"
OVERRIDES = {"operator": {"pin_hash": PIN_HASH, "duplicate_minutes": 0},
             "offline": {"floor_limit": 5000, "total_limit": 20000, "down_after": 1},
             "timeouts": {"busy_retries": 0}}


def _result(rig: Rig, starts: tuple[str, ...]) -> list[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [r.rstrip() for r in rig.hw.display()]
        if rows[0].startswith(starts):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no {starts}: {rig.hw.display()}")


def _sale(rig: Rig, digits: str, expect: str) -> None:
    rig.hw.press("CANCEL")
    rig.sale(digits, PAN)
    assert _result(rig, (expect,))[0] == expect
    rig.hw.press("OK")


def _amount(text: str) -> int:
    euros, cents = text.split()[-1].lstrip("-").split(".")
    return int(euros) * 100 + int(cents)


def _row(paper: str, label: str) -> tuple[int, int]:
    """'SALES 2   EUR 30.00' -> (2, 3000)."""
    m = re.search(rf"^{label} (\d+) +(-?EUR [\d.]+)\s*$", paper, re.M)
    assert m, f"no {label!r} row in:\n{paper}"
    return int(m[1]), _amount(m[2])


def test_x_report_agrees_with_the_host_ledger(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start()
        rig.wait_online()
        _sale(rig, "1000", "APPROVED")
        _sale(rig, "2000", "APPROVED")
        _sale(rig, "2500", "APPROVED")
        rig.wait_idle()
        refund(rig, "700")
        _result(rig, ("REFUND APPROVED",))
        rig.hw.press("OK")
        void(rig, "2")  # the 20.00 sale
        rig.hw.press("OK")
        rig.hw.wait_display("VOIDED", timeout=10)
        rig.hw.press("OK")
        rig.hw.host_down()  # two offline approvals: the host refuses the first
        _sale(rig, "1500", "APPROVED OFFLINE")
        _sale(rig, "1600", "APPROVED OFFLINE")
        rig.hw.host_fault("decline", mti="0220", count=1, code="05")
        rig.hw.host_up()
        rig.hw.press("CANCEL")
        rig.wait_online()
        wait_and_check(rig, timeout=30)

        before = len(rig.hw.receipts())
        function(rig, "7")
        rig.hw.wait_display("X REPORT PRINTED", timeout=15)
        paper = rig.wait_receipts(before + 1)[-1]
        assert "X REPORT - BATCH NOT CLOSED" in paper and PIN not in rig.log()

        ledger = [e for e in rig.hw.ledger() if e["batch"] == "000001"]
        charged = [e for e in ledger if e["charged"]]
        credited = [e for e in ledger if e["credited"]]
        voided = [e for e in ledger if e["voided"]]
        assert _row(paper, "PURCHASES") == (len(charged), sum(e["amount"] for e in charged))
        assert _row(paper, "REFUNDS") == (len(credited), sum(e["amount"] for e in credited))
        assert _row(paper, "VOIDS") == (len(voided), sum(e["amount"] for e in voided)) \
            == (1, 2000)
        assert _row(paper, "SALES") == (2, 3500)  # the online sales still standing
        # the first advice up (15.00) is refused by the host; the other is accepted
        assert _row(paper, "OFFLINE APPROVED") == (1, 1600)
        assert _row(paper, "OFFLINE REFUSED") == (1, 1500)
        assert rig.hw.batches() == []  # an X report closes nothing

        rig.hw.press("CANCEL")
        function(rig, "8")  # and the bank agrees with the same numbers
        rig.hw.wait_display("CLOSE BATCH?")
        rig.hw.press("OK")
        rig.hw.wait_display("IN BALANCE", timeout=30)
        wait_and_check(rig)
        assert check_batches(rig.journal_path, rig.hw.batches(), "TERM0001") == []
