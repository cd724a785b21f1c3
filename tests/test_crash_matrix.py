"""Crash matrix: SIGKILL the firmware at every step of a sale, restart it, check the money
and what the merchant is told.

Steps with no time inside them (between two statements) are hit with the
firmware's named fault points (firmware/runtime/failpoints.py), which SIGKILL the
process right there, like a power cut. Every listed point has a scenario here
that reaches it, and the test fails if the process was not killed there. Steps
that last (waiting for the host, printing) are also hit from outside at a random
moment inside the step. The host answers after a random delay, so the kill also
lands at random points of the host's own processing.

After each kill the firmware restarts, resolves what the journal shows, and the
idle screen must say what happened to the last sale (or nothing, when nothing
happened that the merchant has not seen); the invariant checker reconciles
journal and host ledger once queues drain; and the host must have seen every
reversal and advice first as 0400 / 0220, never a repeat before its original.

The batch close has a fault point at each of its steps too: after each kill there
the restarted terminal resumes the close the journal shows in progress, and every
closed batch's totals must equal the host ledger's, each batch closed once
(`check_batches`); a further test kills at random close steps until each of three
batches is closed.

Chip sales (a private pcscd and vpcd per test, tests/chiprig.py) are killed at the
sale's steps and at their own: `chip_second_ac` (the host's answer journaled, the
second GENERATE AC not yet sent) and `after_chip_settled` (the card's decision
journaled, not yet shown). After each kill the card is taken out and the firmware
restarts: a sale killed between the host's answer and the card's decision ends
reversed (reason 06, LAST SALE REVERSED); one killed after the card's decision
stands as the card decided (its copy printed; a decline's reversal sent).

Online PIN sales (a stripe whose service code asks for a PIN, [pin] on with hwsim's
test DUKPT key) are killed at `after_pin_counter` (the KSN counter advanced in the
journal, the PIN block not yet made nor sent: LAST SALE NOT DONE) and at `after_send`
(the 0200 with fields 52 and 53 written: reversed, reason 68, the 0400 without 52 or
53). After each restart a second PIN sale is approved: its KSN is new (the host answers
81 to a KSN it has seen), the journal's counter went on by one per block made.

POSTERM_CRASH_REPEATS (default 4) sets how many times each sale step is repeated
(a chip step: half as many, at least once).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from firmware.runtime import failpoints
from tests.chiprig import Pcscd, pcsc  # noqa: F401  (the fixture)
from tests.invariants import check_batches, wait_and_check
from tests.rig import Rig, wait_until

PAN = "4761739001010010"
REPEATS = int(os.environ.get("POSTERM_CRASH_REPEATS", "4"))
FEW = max(1, REPEATS // 2)
REVERSED = "LAST SALE REVERSED"
NOT_DONE = "LAST SALE NOT DONE"
COPY = "COPY PRINTED"


def _amount(rng: random.Random) -> str:
    return str(rng.randrange(10, 390) * 10)  # ends in 0: never a decline convention


def _online_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.host_fault("delay", seconds=round(rng.uniform(0, 0.3), 3))
    rig.sale(_amount(rng), PAN)


def _slow_printer_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.printer_fault(slow_seconds=0.08)
    rig.sale(_amount(rng), PAN)


def _swallowed_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.host_fault("swallow")  # charged, never answered: a reversal follows
    rig.sale(_amount(rng), PAN)


def _cancelled_busy_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.host_fault("busy", count=0)
    rig.sale(_amount(rng), PAN)
    rig.hw.wait_display("HOST BUSY")
    deadline = time.monotonic() + 10
    while rig.fw is not None and rig.fw.poll() is None and time.monotonic() < deadline:
        rig.hw.press("CANCEL")  # taken in BUSY_WAIT (a retry in flight only says wait)
        time.sleep(0.1)


def _offline_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.wait_display("OFFLINE")  # the start-up connection found the host down
    rig.sale(_amount(rng)[:-1], PAN)  # under the floor limit


def _offline_then_upload(rig: Rig, rng: random.Random) -> None:
    _offline_sale(rig, rng)
    rig.hw.wait_display("APPROVED OFFLINE")
    deadline = time.monotonic() + 10
    while any("PRINTING..." in r for r in rig.hw.display()) and time.monotonic() < deadline:
        time.sleep(0.05)  # shown and printed: the merchant has seen this sale
    while not _shown_and_printed(rig) and time.monotonic() < deadline:
        time.sleep(0.05)  # (the journal notes it once the glass and the paper have it)
    rig.hw.host_up()


def _shown_and_printed(rig: Rig) -> bool:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT result_shown, receipt_printed FROM sales ORDER BY id DESC "
                         "LIMIT 1").fetchone()
    finally:
        db.close()
    return row is not None and bool(row[0]) and bool(row[1])


def _press_a_key(rig: Rig, rng: random.Random) -> None:
    rig.wait_idle()
    rig.hw.press(str(rng.randint(1, 9)))


def _probe_while_down(rig: Rig, rng: random.Random) -> None:
    pass  # the host is down from the start: the link monitor probes


def _close_from_menu(rig: Rig) -> None:
    rig.wait_idle()
    rig.hw.press("F1")
    rig.hw.wait_display("1 LAST")
    rig.hw.press("F1")
    rig.hw.wait_display("8 CLOSE")
    rig.hw.press("8")
    rig.hw.wait_display("CLOSE BATCH?")
    rig.hw.press("OK")


def _sales_then_close(rig: Rig, rng: random.Random, *, upload: bool) -> None:
    for _ in range(2):
        rig.sale(_amount(rng), PAN)
        rig.hw.wait_display("APPROVED")
        rig.wait_idle()
    if upload:
        rig.hw.host_out_of_balance(1)  # the next 0500 is answered 95: the batch is uploaded
    _close_from_menu(rig)


def _close(rig: Rig, rng: random.Random) -> None:
    _sales_then_close(rig, rng, upload=False)


def _close_with_upload(rig: Rig, rng: random.Random) -> None:
    _sales_then_close(rig, rng, upload=True)


Scenario = Callable[[Rig, random.Random], None]
# point -> (scenario, host down at start, what the idle screen must say after the restart)
MATRIX: dict[str, tuple[Scenario, bool, str | None]] = {
    "before_record_sending": (_online_sale, False, NOT_DONE),  # nothing journaled, told
    "after_record_sending": (_online_sale, False, REVERSED),
    "after_send": (_online_sale, False, REVERSED),
    "after_answer": (_online_sale, False, REVERSED),
    "after_answer_recorded": (_online_sale, False, COPY),
    "during_print": (_slow_printer_sale, False, COPY),
    "after_reversal_recorded": (_swallowed_sale, False, REVERSED),
    "after_reversal_identity": (_swallowed_sale, False, REVERSED),
    "after_reversal_sent": (_swallowed_sale, False, REVERSED),
    "after_sale_closed": (_cancelled_busy_sale, False, NOT_DONE),
    "after_offline_recorded": (_offline_sale, True, COPY),
    "after_advice_identity": (_offline_then_upload, True, None),
    "after_advice_sent": (_offline_then_upload, True, None),
    "link_probe": (_probe_while_down, True, None),
    "main_loop_key": (_press_a_key, False, None),
    "close_started": (_close, False, None),
    "close_totals_recorded": (_close, False, None),
    "close_0500_sent": (_close, False, None),
    "close_answer_recorded": (_close_with_upload, False, None),
    "upload_item_sent": (_close_with_upload, False, None),
    "upload_item_answered": (_close_with_upload, False, None),
    "close_960000_sent": (_close_with_upload, False, None),
    "close_done": (_close, False, None),
}
CLOSE_STEPS = {p for p in MATRIX if p.startswith(("close_", "upload_"))}
SALE_STEPS = {"after_record_sending", "after_send", "after_answer", "after_answer_recorded"}
OVERRIDES: dict[str, Any] = {
    "offline": {"down_after": 1},
    "timeouts": {"busy_backoff": 3.0, "busy_retries": 3, "sale_budget": 30.0},
    # the close is under test here, not the PIN; random amounts may repeat within minutes
    "operator": {"protect": [], "duplicate_minutes": 0},
}


def test_every_fault_point_has_a_scenario() -> None:
    assert set(MATRIX) | {point for point, _, _ in CHIP_MATRIX.values()} | \
        {point for point, _ in PIN_MATRIX.values()} == set(failpoints.POINTS)


def _first_transmissions_are_originals(rig: Rig) -> None:
    """host-interface.md 1: 0400 / 0220 / 0320 first; 0401 / 0221 / 0321 only after one
    was written."""
    first: dict[tuple[str, str], str] = {}
    for m in rig.hw.messages():
        if m["mti"] in ("0400", "0401", "0220", "0221", "0320", "0321"):
            first.setdefault((m["mti"][:3], m["stan"]), m["mti"])
    repeats_first = {k: v for k, v in first.items() if v.endswith("1")}
    assert not repeats_first, f"the host saw a repeat before its original: {repeats_first}"


def _wait_last_slip(rig: Rig) -> None:
    """The last sale's slip, never printed before the kill, comes out as a copy after the
    restart (printed after READY: before the next kill)."""
    def printed() -> bool:
        db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT receipt_printed FROM sales ORDER BY id DESC LIMIT 1"
                             ).fetchone()
        finally:
            db.close()
        return row is not None and bool(row[0])

    wait_until(printed, 10, lambda: f"the last sale's slip never printed: {rig.hw.receipts()}")


def _restart_and_check(rig: Rig, expect: str | None) -> None:
    rig.hw.host_clear()
    rig.hw.host_up()
    rig.hw.printer_clear()
    rig.start_fw()
    rows = rig.wait_idle(timeout=15)
    if expect:
        rows = rig.hw.wait_display(expect, timeout=10)
        if any("PRINTING COPY" in r for r in rows):  # the copy is part of the recovery
            rows = rig.hw.wait_display("COPY PRINTED", timeout=10)
    else:
        time.sleep(0.3)
        rows = rig.hw.display()
        assert not any("LAST SALE" in r for r in rows), rows
    assert "ENTER AMOUNT" in " ".join(rows), rows
    wait_and_check(rig)
    _first_transmissions_are_originals(rig)
    rig.hw.press("CANCEL")  # acknowledge the notice


def _close_in_progress(rig: Rig) -> bool:
    if not rig.journal_path.exists():
        return False
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        return bool(db.execute("SELECT count(*) FROM batch_closes WHERE state IN "
                               "('closing', 'uploading', 'uploaded')").fetchone()[0])
    except sqlite3.OperationalError:  # no batch tables yet
        return False
    finally:
        db.close()


def _restart_after_close_kill(rig: Rig) -> None:
    """After a kill inside a close: the restarted terminal resumes the close the journal
    shows in progress (or leaves the batch open when none was journaled yet), comes back
    to idle, and every closed batch's totals equal the host's, each closed once."""
    rig.hw.host_clear()
    rig.hw.host_up()
    rig.hw.printer_clear()
    rig.start_fw()
    deadline = time.monotonic() + 30
    while _close_in_progress(rig) or "ENTER AMOUNT" not in " ".join(rig.hw.display()):
        assert time.monotonic() < deadline, f"close not resumed: {rig.hw.display()}"
        time.sleep(0.1)
    rows = rig.hw.display()
    assert not any("LAST SALE" in r or "NOT CLOSED" in r for r in rows), rows
    wait_and_check(rig)
    problems = check_batches(rig.journal_path, rig.hw.batches(), "TERM0001")
    assert problems == [], "\n".join(problems)
    _first_transmissions_are_originals(rig)


@pytest.mark.parametrize("point", sorted(MATRIX))
def test_kill_at_fault_point(tmp_path: pathlib.Path, point: str) -> None:
    scenario, down, expect = MATRIX[point]
    rng = random.Random(point)
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start_sim()
        for _ in range(REPEATS if point in SALE_STEPS else FEW):
            if down:
                rig.hw.host_down()
            rig.start_fw(failpoint=point)
            scenario(rig, rng)
            assert rig.wait_fw_exit(timeout=20) == -9, f"fault point {point} never fired"
            if point in CLOSE_STEPS:
                _restart_after_close_kill(rig)
            else:
                _restart_and_check(rig, expect)
            if point in ("after_record_sending", "after_send", "after_answer"):
                _wait_last_slip(rig)
            rig.kill_fw()
        receipts = rig.hw.receipts()
        approved = [r for r in receipts if "APPROVED" in r]
        if point in ("after_answer_recorded", "during_print"):
            assert approved and all("*** COPY ***" in r for r in approved[-1:])
        if point in ("after_record_sending", "after_send", "after_answer"):
            assert approved == [] and not any(e["charged"] for e in rig.hw.ledger())
            assert any("NOT COMPLETED" in r and "*** COPY ***" in r for r in receipts), receipts


# -- chip sales -------------------------------------------------------------------------

CHIP_ONLINE = "online-pin"  # online only: every sale goes to the host, ARQC then TC
CHIP_OFFLINE = "offline-pin"  # its own TC (Y1) under the floor limit
CHIP_REPEATS = FEW
CARD_DECLINED = "LAST SALE DECLINED"


def _chip_online_sale(rig: Rig, rng: random.Random) -> None:
    rig.hw.host_fault("delay", seconds=round(rng.uniform(0, 0.3), 3))
    rig.chip_sale(_amount(rng), CHIP_ONLINE)


def _chip_declined_by_card(rig: Rig, rng: random.Random) -> None:
    rig.hw.chip_wrong_arpc()  # the host approves, the card refuses its ARPC: an AAC
    rig.chip_sale(_amount(rng), CHIP_ONLINE)


def _chip_offline_sale(rig: Rig, rng: random.Random) -> None:
    rig.chip_sale(_amount(rng)[:-1], CHIP_OFFLINE)  # under the floor limit: the card's TC


# case -> (point, scenario, what the idle screen must say after the restart)
CHIP_MATRIX: dict[str, tuple[str, Scenario, str]] = {
    "online-after_record_sending": ("after_record_sending", _chip_online_sale, REVERSED),
    "online-after_send": ("after_send", _chip_online_sale, REVERSED),
    # the host's 00 journaled, the card never asked: reversed (06), never approved
    "online-after_answer_recorded": ("after_answer_recorded", _chip_online_sale, REVERSED),
    "online-chip_second_ac": ("chip_second_ac", _chip_online_sale, REVERSED),
    "online-after_chip_settled": ("after_chip_settled", _chip_online_sale, COPY),
    "y1-after_offline_recorded": ("after_offline_recorded", _chip_offline_sale, COPY),
    "declined-after_chip_settled": ("after_chip_settled", _chip_declined_by_card,
                                    CARD_DECLINED),
}


def _chip_journal(rig: Rig) -> tuple[str, str, list[tuple[str, str]]]:
    """The last sale's status and chip state, and its reversals (reason, state)."""
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        sale_id, status, chip = db.execute(
            "SELECT id, status, chip FROM sales ORDER BY id DESC LIMIT 1").fetchone()
        reversals = [(str(r[0]), str(r[1])) for r in db.execute(
            "SELECT reason, state FROM reversals WHERE sale_id=?", (sale_id,))]
    finally:
        db.close()
    state = str(json.loads(chip).get("state", "")) if chip else ""
    return str(status), state, reversals


@pytest.mark.parametrize("case", sorted(CHIP_MATRIX))
def test_kill_chip_sale_at_fault_point(tmp_path: pathlib.Path, pcsc: Pcscd,  # noqa: F811
                                       case: str) -> None:
    point, scenario, expect = CHIP_MATRIX[case]
    rng = random.Random(case)
    with Rig(tmp_path, overrides=OVERRIDES, pcsc=pcsc) as rig:
        rig.start_sim()
        for _ in range(CHIP_REPEATS):
            charged = sum(bool(e["charged"]) for e in rig.hw.ledger())
            rig.start_fw(failpoint=point)
            scenario(rig, rng)
            assert rig.wait_fw_exit(timeout=30) == -9, f"fault point {point} never fired"
            rig.hw.chip_remove()  # the card taken out while the terminal is dead
            _restart_and_check(rig, expect)
            status, state, reversals = _chip_journal(rig)
            now = sum(bool(e["charged"]) for e in rig.hw.ledger())
            if expect == REVERSED:
                assert status == "NOT_COMPLETED" and now == charged, (status, now)
                # after the host's answer the card's word is what is missing: reason 06
                reason = "06" if point in ("after_answer_recorded", "chip_second_ac") else "68"
                assert reversals == [(reason, "done")], reversals
                if reason == "06":
                    assert state == "settled", state
                _wait_last_slip(rig)
            elif expect == CARD_DECLINED:
                assert status == "DECLINED" and state == "settled" and now == charged
                assert reversals == [("06", "done")], reversals
            else:
                assert status in ("APPROVED", "OFFLINE_APPROVED") and now == charged + 1
                assert reversals == [] and state in ("settled", ""), (reversals, state)
            rig.kill_fw()
        receipts = rig.hw.receipts()
        approved = [r for r in receipts if "APPROVED" in r]
        if expect == COPY:  # the card's decision printed once, as a copy
            assert approved and "*** COPY ***" in approved[-1] and "CHIP" in approved[-1]
        else:
            assert approved == [], approved
        if point == "chip_second_ac" or point == "after_answer_recorded":
            rev = [m for m in rig.hw.messages() if m["mti"] == "0400"]
            assert rev and all(m.get("fields", {}).get("39") == "06" for m in rev), rev


# -- online PIN sales ---------------------------------------------------------------------

PIN_PAN = "6011000990139424"  # service code 120: a PIN required (hardware.md)
PIN = "1234"  # hwsim's host: the right PIN for every card (host-interface 9.2)

# case -> (point, what the idle screen must say after the restart)
PIN_MATRIX: dict[str, tuple[str, str]] = {
    # the KSN counter on disk, no block made: nothing of the sale journaled, nothing sent
    "stripe-after_pin_counter": ("after_pin_counter", NOT_DONE),
    # the 0200 with 52 and 53 written, no answer: reversed (68), the 0400 without 52, 53
    "stripe-after_send": ("after_send", REVERSED),
}


def _pin_sale(rig: Rig, rng: random.Random) -> None:
    """A stripe whose service code asks for a PIN; the right PIN keyed, then OK."""
    rig.sale(_amount(rng), PIN_PAN, service_code="120")
    rig.hw.wait_display("ENTER PIN", timeout=20)
    rig.hw.press(PIN)
    rig.hw.wait_display("*" * len(PIN))
    rig.hw.press("OK")


def _ksn_counter(rig: Rig) -> int:
    """The DUKPT transaction counter the journal holds (0 before the first PIN block)."""
    if not rig.journal_path.exists():
        return 0
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM meta WHERE key LIKE 'dukpt:%'").fetchall()
    except sqlite3.OperationalError:  # no meta table yet
        return 0
    finally:
        db.close()
    assert len(rows) <= 1, rows  # one key, one counter
    return int(rows[0][0]) if rows else 0


def _pin_requests(rig: Rig) -> list[dict[str, Any]]:
    return [m for m in rig.hw.messages() if m["mti"] == "0200" and m["pin"]]


@pytest.mark.parametrize("case", sorted(PIN_MATRIX))
def test_kill_pin_sale_at_fault_point(tmp_path: pathlib.Path, case: str) -> None:
    """A stripe PIN sale killed at `point`, then, after the restart, a second PIN sale on
    the same terminal. The KSN counter is durable before a block is made and never goes
    back (host-interface 9.1): the second sale's KSN is new, so the host, which answers 81
    to a KSN it has seen, approves it; the journal's counter went on by one per block
    made, the killed one included; and no 0400 carries 52 or 53."""
    point, expect = PIN_MATRIX[case]
    rng = random.Random(case)
    with Rig(tmp_path, overrides=OVERRIDES, pin=True) as rig:
        rig.start_sim()
        for _ in range(FEW):
            before = _ksn_counter(rig)
            charged = sum(bool(e["charged"]) for e in rig.hw.ledger())
            sent = len(_pin_requests(rig))
            rig.start_fw(failpoint=point)
            _pin_sale(rig, rng)
            assert rig.wait_fw_exit(timeout=20) == -9, f"fault point {point} never fired"
            assert _ksn_counter(rig) == before + 1, (before, _ksn_counter(rig))
            # killed after the counter: the block was never sent; after the send: it was
            assert len(_pin_requests(rig)) == sent + (point == "after_send")
            _restart_and_check(rig, expect)
            if point == "after_send":
                _wait_last_slip(rig)  # NOT COMPLETED, as a copy
            assert sum(bool(e["charged"]) for e in rig.hw.ledger()) == charged
            _pin_sale(rig, rng)  # the next PIN sale: a new KSN, approved
            rig.hw.wait_display("APPROVED", timeout=20)
            rig.wait_idle(timeout=20)
            assert _ksn_counter(rig) == before + 2, (before, _ksn_counter(rig))
            requests = _pin_requests(rig)
            assert len(requests) == sent + 1 + (point == "after_send")
            assert requests[-1]["code"] == "00", requests[-1]
            assert sum(bool(e["charged"]) for e in rig.hw.ledger()) == charged + 1
            rig.kill_fw()
        # each KSN the host saw, it saw once: it answers 81 to one it has seen (9.2)
        # (a 0200 killed after its send may have had its answer refused by the dead
        # socket: no code then)
        requests = _pin_requests(rig)
        assert all(m["code"] in ("00", None) for m in requests), requests
        assert "already used" not in (rig.tmp / "hwsim.log").read_text(errors="replace")
        # every block made is counted: the ones sent and the ones killed before the send
        assert _ksn_counter(rig) == len(requests) + (FEW if point == "after_pin_counter"
                                                     else 0)
        reversals = [m for m in rig.hw.messages() if m["mti"] in ("0400", "0401")]
        if point == "after_send":
            assert len({m["stan"] for m in reversals}) == FEW, reversals
            assert all(m["fields"].get("39") == "68" for m in reversals), reversals
        else:
            assert reversals == [], reversals
        # host-interface 9.1: never 52 or 53 in a reversal (`pin`: field 52 was there)
        assert not any("52" in m["fields"] or "53" in m["fields"] or m["pin"]
                       for m in reversals), reversals
        receipts = rig.hw.receipts()
        assert sum("APPROVED" in r for r in receipts) == FEW, receipts


def _last_sale(rig: Rig) -> tuple[int, str, int] | None:
    if not rig.journal_path.exists():
        return None
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT id, status, copy_printed FROM sales ORDER BY id DESC LIMIT 1"
                         ).fetchone()
    finally:
        db.close()
    return (int(row[0]), str(row[1]), int(row[2])) if row else None


def test_kill_while_waiting_for_the_host(tmp_path: pathlib.Path) -> None:
    rng = random.Random(11)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        told = 0
        for _ in range(REPEATS * 2):
            rig.hw.host_fault("delay", seconds=1.0)
            before = _last_sale(rig)
            rig.start_fw()
            rig.sale(_amount(rng), PAN)
            time.sleep(rng.uniform(0.0, 1.1))  # anywhere from before the send to the answer
            rig.kill_fw()
            rig.hw.host_clear()
            rig.start_fw()  # ready only once recovery is done
            last = _last_sale(rig)
            expect = None
            if last is not None and (before is None or last[0] != before[0]):
                # sent without an answer: reversed; answered but never printed: a copy
                expect = REVERSED if last[1] == "NOT_COMPLETED" else COPY if last[2] else None
            rows = rig.wait_idle()
            if expect:
                rig.hw.wait_display(expect, timeout=10)
                told += 1
            else:
                assert not any("LAST SALE" in r for r in rows), rows
            wait_and_check(rig)
            rig.hw.press("CANCEL")
            rig.kill_fw()


def test_kill_while_printing(tmp_path: pathlib.Path) -> None:
    rng = random.Random(12)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        for _ in range(REPEATS):
            rig.hw.printer_fault(slow_seconds=0.08)
            rig.start_fw()
            rig.sale(_amount(rng), PAN)
            rig.hw.wait_display("PRINTING")
            time.sleep(rng.uniform(0.05, 1.2))
            rig.kill_fw()
            rig.hw.printer_clear()
            _restart_and_check(rig, COPY)
            assert "*** COPY ***" in rig.wait_receipts(1)[-1]
            rig.kill_fw()


def _closed_batches(rig: Rig) -> list[int]:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        return [int(r[0]) for r in db.execute(
            "SELECT batch FROM batch_closes WHERE state='closed' ORDER BY batch")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _close_state(rig: Rig, batch: int) -> str:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT state FROM batch_closes WHERE batch=?", (batch,)).fetchone()
        return str(row[0]) if row else ""
    except sqlite3.OperationalError:
        return ""
    finally:
        db.close()


def _steps_ahead(state: str, upload_ahead: bool) -> list[str]:
    """The close's fault points a run can still reach from the journal's state."""
    steps = ["close_started", "close_totals_recorded"]
    if state in ("", "failed", "closing"):
        steps.append("close_0500_sent")
        if upload_ahead:
            steps += ["close_answer_recorded", "upload_item_sent", "upload_item_answered"]
    if state == "uploading":
        steps += ["upload_item_sent", "upload_item_answered"]
    if upload_ahead or state in ("uploading", "uploaded"):
        steps.append("close_960000_sent")
    return steps + ["close_done"]


def test_kill_at_random_close_steps_repeatedly(tmp_path: pathlib.Path) -> None:
    """Three batches, each closed through SIGKILLs at random steps of its close (the
    first close of each answered 95, so the upload steps are in reach) until it is
    closed: each batch closed exactly once, with every sale in its totals and the
    host's ledger agreeing."""
    rng = random.Random(31)
    kills = cycles = 0
    with Rig(tmp_path, overrides=OVERRIDES) as rig:
        rig.start_sim()
        for batch in (1, 2, 3):
            rig.start_fw()
            for _ in range(3):
                rig.sale(_amount(rng), PAN)
                rig.hw.wait_display("APPROVED")
                rig.wait_idle()
            rig.hw.host_out_of_balance(1)
            zeros = sum(m["mti"] == "0500" for m in rig.hw.messages())
            rig.kill_fw()
            while batch not in _closed_batches(rig):
                cycles += 1
                assert cycles <= 60, "the close never completed"
                # until the forced 95 is used up, the upload is still ahead
                forced = sum(m["mti"] == "0500" for m in rig.hw.messages()) == zeros
                point = rng.choice(_steps_ahead(_close_state(rig, batch), forced))
                nth = rng.randint(1, 3) if point.startswith("upload_") else 1
                rig.start_fw(failpoint=f"{point}:{nth}")
                if not _close_in_progress(rig):
                    try:
                        _close_from_menu(rig)
                    except AssertionError:  # killed on the way (a resumed close's step)
                        pass
                deadline = time.monotonic() + 30
                while rig.fw is not None and rig.fw.poll() is None and \
                        (_close_in_progress(rig) or batch not in _closed_batches(rig)):
                    assert time.monotonic() < deadline, f"stuck: {rig.hw.display()}"
                    time.sleep(0.05)
                if rig.fw is not None and rig.fw.poll() == -9:
                    kills += 1
                else:
                    rig.kill_fw()
            rig.start_fw()
            rig.wait_idle()
            wait_and_check(rig)
            problems = check_batches(rig.journal_path, rig.hw.batches(), "TERM0001")
            assert problems == [], "\n".join(problems)
            _first_transmissions_are_originals(rig)
            assert _closed_batches(rig) == list(range(1, batch + 1))
            assert rig.log().count(f"batch {batch} closed in balance") <= 1
            deadline = time.monotonic() + 10  # a Z report a kill kept back prints at start
            while sum("Z REPORT - BATCH CLOSED" in r for r in rig.hw.receipts()) < batch:
                assert time.monotonic() < deadline, "a Z report never printed"
                time.sleep(0.1)
            rig.kill_fw()
    print(f"random close kills: {kills} SIGKILLs in {cycles} cycles over 3 batches")
    assert kills >= 3


@pytest.mark.parametrize("point", ["upload_item_sent:6", "upload_item_answered:5"])
def test_kill_mid_pipelined_upload(tmp_path: pathlib.Path, point: str) -> None:
    """Twelve sales, a window of 4: the upload is killed with 0320s in flight (after the
    6th written, or the 5th answer journaled, with three or four others outstanding).
    The restarted terminal resumes the close: the host ends with every transaction
    uploaded exactly once (a repeat only for one written before the kill), a 0321
    never before its 0320, the 960000 after every answer, and the batch balanced."""
    rng = random.Random(point)
    overrides = {**OVERRIDES, "host": {"advice_window": 4}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start_sim()
        rig.start_fw(failpoint=point)
        for _ in range(12):
            rig.sale(_amount(rng), PAN)
            rig.hw.wait_display("APPROVED")
            rig.wait_idle()
        rig.hw.host_out_of_balance(1)
        _close_from_menu(rig)
        assert rig.wait_fw_exit(timeout=30) == -9, f"fault point {point} never fired"
        _restart_after_close_kill(rig)
        assert _closed_batches(rig) == [1]
        wait_and_check(rig)
        problems = check_batches(rig.journal_path, rig.hw.batches(), "TERM0001")
        assert problems == [], "\n".join(problems)
        _first_transmissions_are_originals(rig)
        [record] = [b for b in rig.hw.batches() if b["batch"] == "000001"]
        assert len(record["uploads"]) == 12
        assert [u["status"] for u in record["uploads"]] == ["matched"] * 12
        assert [c["processing_code"] for c in record["closes"]] == ["920000", "960000"]
        messages = rig.hw.messages()
        uploads = [n for n, m in enumerate(messages) if m["mti"] in ("0320", "0321")]
        zeros = [n for n, m in enumerate(messages) if m["mti"] == "0500"]
        assert zeros[-1] > uploads[-1]
        assert len({messages[n]["stan"] for n in uploads}) == 12
        rig.kill_fw()
