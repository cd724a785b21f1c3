"""No internal error leaves the terminal stuck: an exception injected at each place.

POSTERM_RAISE makes a named point raise an exception nobody expects, once (see
firmware/runtime/failpoints.py). A sale whose attempt fails that way ends like
any unknown outcome — reversed if its request may have been written, closed as
not charged if not — and the background tasks (forwarder, link monitor) are
restarted by their supervisor. Each test ends with the money invariant and a
sale that goes through normally afterwards.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
import sys

import pytest

from tests.invariants import wait_and_check
from tests.rig import Rig, _env

PAN = "4761739001010010"


def _next_sale_is_approved(rig: Rig) -> None:
    rig.hw.press("CANCEL")
    rig.sale("770", PAN)
    rig.hw.wait_display("APPROVED", timeout=10)


@pytest.mark.parametrize("point,rows,charged", [
    ("before_record_sending", ("NOT COMPLETED", "TERMINAL ERROR", "NOT CHARGED"), False),
    ("after_record_sending", ("NOT COMPLETED", "TERMINAL ERROR", "NOT CHARGED"), False),
    ("after_send", ("NO RESPONSE", "NOT CHARGED"), False),
    ("after_answer", ("NO RESPONSE", "NOT CHARGED"), False),
    ("after_answer_recorded", ("APPROVED",), True),
])
def test_exception_in_a_sale_attempt_ends_the_sale(tmp_path: pathlib.Path, point: str,
                                                   rows: tuple[str, ...],
                                                   charged: bool) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.start_fw(raise_at=point)
        rig.sale("1230", PAN)
        shown = rig.hw.wait_display(rows[0], timeout=10)
        got = [r.rstrip() for r in shown]
        if rows[0] != "NOT COMPLETED":  # the outcome on top, the amount in its row, the reason
            assert got.pop(1) == "SALE       EUR 12.30", shown
        assert tuple(got[:len(rows)]) == rows, shown
        wait_and_check(rig)
        assert [e["charged"] for e in rig.hw.ledger() if e["amount"] == 1230] in \
            ([charged], [] if not charged else [True])
        slip = rig.wait_receipts(1)[-1]
        assert ("APPROVED" if charged else "NOT CHARGED") in slip
        assert "internal error" in rig.log() and "InjectedFault" in rig.log()
        _next_sale_is_approved(rig)
        wait_and_check(rig)


@pytest.mark.parametrize("point", ["after_reversal_identity", "after_reversal_sent"])
def test_forwarder_is_restarted_and_the_reversal_still_goes(tmp_path: pathlib.Path,
                                                            point: str) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.host_fault("swallow")  # charged, never answered: a reversal follows
        rig.start_fw(raise_at=point)
        rig.sale("1240", PAN)
        rig.hw.wait_display("NO RESPONSE", timeout=10)
        wait_and_check(rig)  # the reversal was sent after the restart of the forwarder
        assert not any(e["charged"] for e in rig.hw.ledger())
        log = rig.log()  # logged, and tried again: by the forwarder's loop or its restart
        assert "reversal of sale 1 not sent: InjectedFault" in log or \
            "forwarder failed: InjectedFault" in log, log
        _next_sale_is_approved(rig)


@pytest.mark.parametrize("point", ["after_advice_identity", "after_advice_sent"])
def test_forwarder_is_restarted_and_the_advice_still_goes(tmp_path: pathlib.Path,
                                                          point: str) -> None:
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start_sim()
        rig.hw.host_down()
        rig.start_fw(raise_at=point)
        rig.hw.wait_display("OFFLINE")
        rig.sale("1250", PAN)
        rig.hw.wait_display("APPROVED OFFLINE", timeout=10)
        rig.hw.host_up()
        wait_and_check(rig)
        assert [(e["amount"], e["charged"]) for e in rig.hw.ledger()] == [(1250, True)]
        assert "forwarder failed: InjectedFault" in rig.log()


def test_link_monitor_is_restarted(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start_sim()
        rig.hw.host_down()
        rig.start_fw(raise_at="link_probe")
        rig.hw.wait_display("OFFLINE")
        rig.hw.host_up()
        rig.wait_online()  # only the link monitor's probes bring it back
        assert "link monitor failed: InjectedFault" in rig.log()
        _next_sale_is_approved(rig)


def test_printer_fault_inside_the_driver_call_is_a_message(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.printer_fault(slow_seconds=0.05)  # the print lasts: the point is reached
        rig.start_fw(raise_at="during_print")
        rig.sale("1260", PAN)
        rows = rig.hw.wait_display("PRINTER FAULT", timeout=10)
        assert rows[0].startswith("APPROVED"), rows
        rig.hw.printer_clear()
        wait_and_check(rig)
        _next_sale_is_approved(rig)


def test_journal_failure_stops_with_a_message_and_the_next_start_recovers(
        tmp_path: pathlib.Path) -> None:
    """A journal that cannot be written is not retried: the terminal stops, says so on
    the display and in one line, and the next start recovers from what was written."""
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.start_fw(raise_at="after_record_sending:1:journal")
        rig.sale("1280", PAN)
        assert rig.wait_fw_exit(timeout=20) == 4, rig.log()
        rig.hw.wait_display("OUT OF ORDER")
        log = rig.log()
        assert "posterm: storage error: journal" in log and "cannot be written" in log
        assert "Traceback" not in log
        rig.start_fw()
        rig.hw.wait_display("LAST SALE REVERSED")  # it was journaled as sending
        wait_and_check(rig)
        _next_sale_is_approved(rig)


def _display_matches_ledger(rig: Rig, amount: int, shown: str) -> None:
    charged = [e["charged"] for e in rig.hw.ledger() if e["amount"] == amount]
    if shown.startswith("APPROVED"):
        assert charged == [True], (shown, rig.hw.ledger())
    else:
        assert not any(charged), (shown, rig.hw.ledger())


def test_exception_right_after_an_offline_approval_is_journaled(tmp_path: pathlib.Path) -> None:
    """The approval is in the journal: it is what the terminal shows, and what the bank
    charges once the advice goes; never NOT CHARGED for a sale that will be charged."""
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start_sim()
        rig.hw.host_down()
        rig.start_fw(raise_at="after_offline_recorded")
        rig.hw.wait_display("OFFLINE")
        rig.sale("1250", PAN)
        rows = rig.hw.wait_display("APPROVED OFFLINE", timeout=10)
        rig.hw.host_up()
        wait_and_check(rig)
        _display_matches_ledger(rig, 1250, rows[0])
        assert "NOT CHARGED" not in rig.wait_receipts(1)[-1]


def test_exception_after_the_reversal_is_journaled_makes_one_reversal(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.host_fault("swallow")
        rig.start_fw(raise_at="after_reversal_recorded")
        rig.sale("1290", PAN)
        rows = rig.hw.wait_display("NO RESPONSE", timeout=10)
        wait_and_check(rig)
        _display_matches_ledger(rig, 1290, rows[0])
        db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
        assert db.execute("SELECT count(*) FROM reversals").fetchone()[0] == 1
        db.close()


def test_journal_failure_inside_an_effect_says_out_of_order(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start_sim()
        rig.hw.host_down()
        rig.start_fw(raise_at="after_offline_recorded:1:journal")
        rig.hw.wait_display("OFFLINE")
        rig.sale("1300", PAN)
        assert rig.wait_fw_exit(timeout=20) == 4, rig.log()
        rig.hw.wait_display("OUT OF ORDER")
        rig.hw.host_up()
        rig.start_fw()  # the approval was journaled: its receipt is printed as a copy
        rig.hw.wait_display("LAST SALE APPROVED")
        wait_and_check(rig)


def test_a_reversal_that_cannot_be_built_never_blocks_the_terminal(
        tmp_path: pathlib.Path) -> None:
    """A journal from a release that let a non-ASCII terminal id through: its reversal
    cannot be encoded. It is taken out of the queue, reported, and sales go on online."""
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.start_fw(failpoint="after_send")
        rig.sale("1310", PAN)
        assert rig.wait_fw_exit() == -9
        db = sqlite3.connect(rig.journal_path)
        fields = json.loads(db.execute("SELECT fields FROM sales WHERE id=1").fetchone()[0])
        fields["41"] = "TÉRM0001"
        db.execute("UPDATE sales SET fields=? WHERE id=1", (json.dumps(fields),))
        db.commit()
        db.close()
        rig.start_fw()
        rig.hw.wait_display("LAST SALE REVERSED")
        for amount in ("1320", "1330"):
            rig.hw.press("CANCEL")
            rig.sale(amount, PAN)
            rig.hw.wait_display("APPROVED", timeout=10)
        log = rig.log()
        assert "reversal of sale 1 CANNOT BE SENT" in log and "Traceback" not in log
        assert log.count("CANNOT BE SENT") == 1
        out = subprocess.run([sys.executable, "-m", "firmware", "--config",
                              str(rig.config_path), "status"], capture_output=True, text=True,
                             env=_env(), timeout=30)
        assert out.returncode == 1 and "cannot be sent" in out.stdout
        charged = sorted(e["amount"] for e in rig.hw.ledger() if e["charged"])
        assert charged == [1310, 1320, 1330]  # 1310 must be settled by hand: the log says so
