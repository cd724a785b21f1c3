"""What the terminal says after a restart, a stop, or an operation it finished on its own.

Each test drives hwsim and posterm as two processes, kills or stops the firmware
where a merchant would have been left guessing, and reads the display, the
printer and the host's ledger afterwards:

- a refund whose answer never came is reversed at the restart, and everything
  says so in a refund's own words (credited, not charged);
- a close the terminal finished before a restart, or resumed after one, is
  announced (BATCH n CLOSED), and a resumed close is never called the daily one;
- a BATCH NOT CLOSED notice does not outlive the close that succeeded after it;
- a stop (SIGTERM) right after an approval leaves the result on the glass for
  its normal time, and a stop that cuts it short is told at the next start;
- a sale stopped before its first journal write is told as not done.
"""

from __future__ import annotations

import pathlib
import signal
import time

from firmware.runtime.operator import hash_pin
from tests.invariants import check_batches, wait_and_check
from tests.rig import Rig
from tests.test_e2e_batch import _approved_sale as _approved
from tests.test_e2e_batch import _close_from_menu
from tests.test_e2e_refund_void import PIN, function

PAN = "4761739001010010"
OPEN = {"operator": {"protect": []}}


def _screens_until(rig: Rig, text: str, timeout: float = 20.0) -> list[list[str]]:
    """Every distinct screen until one shows `text` (polled every 20 ms)."""
    seen: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while True:
        rows = rig.hw.display()
        if not seen or rows != seen[-1]:
            seen.append(rows)
        if any(text in r for r in rows):
            return seen
        assert time.monotonic() < deadline, f"never showed {text!r}: {seen}"
        time.sleep(0.02)


def test_a_refund_reversed_after_a_crash_says_not_credited(tmp_path: pathlib.Path) -> None:
    overrides = {"operator": {"pin_hash": hash_pin(PIN, n=2**10)}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start_sim()
        rig.start_fw(failpoint="after_send")
        rig.wait_online()
        function(rig, "5")
        rig.hw.wait_display("REFUND")
        rig.key_amount("1500")
        rig.hw.swipe(PAN)
        assert rig.wait_fw_exit(timeout=20) == -9
        rig.start_fw()
        rows = rig.hw.wait_display("LAST REFUND REVERSED", timeout=15)
        assert "NOT CREDITED" in " ".join(rows) and "CHARGED" not in " ".join(rows), rows
        copy = rig.wait_receipts(1)[-1]
        assert "NO RESPONSE - NOT CREDITED" in copy and "REFUND REVERSED" in copy, copy
        assert "CHARGED" not in copy and "SALE REVERSED" not in copy, copy
        log = rig.log()
        assert "recovery: refund 1 was sent without a recorded answer: reversal pending, " \
               "customer not credited" in log
        assert "LAST REFUND REVERSED / NOT CREDITED" in log
        wait_and_check(rig)
        assert not any(e["charged"] for e in rig.hw.ledger())


def test_a_close_finished_before_a_restart_is_announced(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:
        rig.start_sim()
        rig.start_fw(failpoint="close_done")
        _approved(rig, "1250")
        _close_from_menu(rig)
        assert rig.wait_fw_exit(timeout=20) == -9
        rig.start_fw()
        rows = rig.hw.wait_display("BATCH 1 CLOSED", timeout=15)
        assert "IN BALANCE" in " ".join(rows) and "ENTER AMOUNT" in " ".join(rows), rows
        z = rig.wait_receipts(2)[-1]
        assert "Z REPORT - BATCH CLOSED" in z
        rig.hw.press("CANCEL")  # acknowledged: the notice goes
        rows = rig.hw.wait_display("ENTER AMOUNT")
        time.sleep(0.3)
        assert not any("BATCH 1 CLOSED" in r for r in rig.hw.display()), rig.hw.display()
        assert check_batches(rig.journal_path, rig.hw.batches(), "TERM0001") == []


def test_a_close_resumed_after_a_crash_is_not_called_daily_and_is_announced(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:  # no close_time: no daily close at all
        rig.start_sim()
        rig.start_fw(failpoint="close_answer_recorded")
        _approved(rig, "1000")
        _approved(rig, "2000")
        rig.hw.host_out_of_balance(1)  # 0510 95: the batch is uploaded, then it balances
        _close_from_menu(rig)
        assert rig.wait_fw_exit(timeout=20) == -9
        since = int(rig.hw.i2c_log(since=1 << 62)["next"])
        # the resumed close's 0500 answered after 0.8 s: its screen stays long enough to be
        # drawn (the display keeper draws the newest screen, and a close that ends while
        # the glass is still being initialised would never show its CLOSING screen)
        rig.hw.host_fault("delay", seconds=0.8, mti="0500")
        rig.start_fw()
        rig.hw.wait_display("BATCH 1 CLOSED", timeout=30)
        # every screen the display showed after the restart, from hwsim's I2C log
        screens = [e["rows"] for e in rig.hw.i2c_log(since=since)["entries"] if "rows" in e]
        closing = [s for s in screens if s[0].startswith("CLOSING BATCH")]
        assert closing, screens
        assert all("DAILY CLOSE" not in " ".join(s) for s in screens), closing
        assert any("RESUMED CLOSE" in s[3] for s in closing), closing
        rig.hw.wait_display("ENTER AMOUNT", timeout=15)
        rows = rig.hw.wait_display("BATCH 1 CLOSED")  # kept: it ran with nobody asking
        assert "IN BALANCE" in " ".join(rows), rows
        assert check_batches(rig.journal_path, rig.hw.batches(), "TERM0001") == []


def test_a_close_that_succeeds_replaces_the_notice_of_one_that_failed(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:
        rig.start()
        _approved(rig, "1250")
        rig.hw.host_fault("swallow", mti="0500")  # the 0500 goes unanswered once
        _close_from_menu(rig)
        rig.hw.wait_display("CLOSE NOT DONE", timeout=30)
        rig.hw.press("OK")
        rows = rig.hw.wait_display("BATCH NOT CLOSED", timeout=10)
        rig.hw.host_clear()
        _close_from_menu(rig)
        rig.hw.wait_display("BATCH 1 CLOSED", timeout=30)
        rig.hw.press("OK")
        rig.wait_idle()
        time.sleep(0.3)
        rows = rig.hw.display()
        assert not any("NOT CLOSED" in r for r in rows), rows


def _approved_then_sigterm(rig: Rig, digits: str) -> float:
    """A sale approved, then SIGTERM as soon as APPROVED is on the glass; when it showed."""
    rig.start()
    rig.sale(digits, PAN)
    rig.hw.wait_display("APPROVED")
    shown = time.monotonic()
    assert rig.fw is not None
    rig.fw.send_signal(signal.SIGTERM)
    return shown


def test_sigterm_right_after_an_approval_lets_the_result_be_read(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"timeouts": {"result": 3.0}}) as rig:
        shown = _approved_then_sigterm(rig, "2100")
        _screens_until(rig, "STOPPING", timeout=20)
        on_glass = time.monotonic() - shown
        assert on_glass >= 2.5, f"APPROVED was on the glass {on_glass:.2f} s only"
        assert rig.wait_fw_exit(timeout=20) == 0, rig.log()
        assert "APPROVED" in rig.hw.receipts()[-1]
        rig.start_fw()
        time.sleep(0.3)
        assert not any("LAST SALE" in r for r in rig.wait_idle()), rig.hw.display()


def test_a_stop_that_cuts_the_result_short_is_told_at_the_next_start(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"timeouts": {"result": 10.0}}) as rig:
        _approved_then_sigterm(rig, "2200")
        rig.wait_receipts(1)
        time.sleep(0.3)
        assert rig.fw is not None
        rig.fw.send_signal(signal.SIGTERM)  # stop now: the result goes before its time
        assert rig.wait_fw_exit(timeout=20) == 0, rig.log()
        rig.start_fw()
        rows = rig.hw.wait_display("LAST SALE APPROVED", timeout=10)
        assert "RECEIPT PRINTED" in " ".join(rows), rows
        wait_and_check(rig)


def test_a_sale_killed_before_its_first_journal_write_is_told_not_done(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.start_fw(failpoint="before_record_sending")
        rig.sale("2300", PAN)
        assert rig.wait_fw_exit(timeout=20) == -9
        rig.start_fw()
        rows = rig.hw.wait_display("LAST SALE NOT DONE", timeout=10)
        assert "NOT CHARGED" in " ".join(rows), rows
        assert "a sale of EUR 23.00 was stopped before it was recorded: nothing was sent, " \
               "customer not charged" in rig.log()
        assert rig.hw.ledger() == [] and not any(m["mti"] == "0200" for m in rig.hw.messages())
        # told once: after one more restart it is gone
        rig.hw.press("CANCEL")
        rig.kill_fw(signal.SIGTERM)
        rig.start_fw()
        time.sleep(0.3)
        assert not any("LAST SALE" in r for r in rig.wait_idle()), rig.hw.display()
