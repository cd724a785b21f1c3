"""What the merchant sees: every screen in plain words, and the new kinds of outcome.

Driven through the pure core (no loop, no process): refused offline sales are
announced and printed, side prints say what they printed, a host whose TLS
identity is refused is not "busy", an internal error ends a sale as not charged,
and no screen between phases shows a half-decided state.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

from firmware.core.effects import Authorize, Beep, DecideOffline, Print, Show
from firmware.core.events import (
    AdviceRefused, AttemptFailed, CardReadFailed, CardSwiped, CloseDue, CloseFinished,
    CloseProgress, HostAnswered, HostBusy, HostUntrusted, KeyPressed, LinkChanged,
    OfflineDecided, PinChecked, PrintFinished, QueueChanged, TimerFired, VoidCandidate,
    VoidRecorded,
)
from firmware.core.model import SaleStatus
from firmware.core.risk import QueueStats
from firmware.core.machine import Phase, initial
from tests.test_core_sale import CARD, CFG, T0, keys, record, run, shown, to_card_wait


def test_refused_offline_sale_is_announced_printed_and_kept_until_cleared() -> None:
    st, _ = initial(CFG)
    refused = record(SaleStatus.OFFLINE_REFUSED, "05", approval="Y30007")
    st, eff = run(st, AdviceRefused(refused))
    assert "OFFLINE SALE REFUSED" in shown(eff) and "SALE #7 UNPAID" in shown(eff)
    slips = [e for e in eff if isinstance(e, Print)]
    assert len(slips) == 1 and slips[0].job == "refused" and slips[0].sale_id == 7
    assert "IT IS NOT PAID: COLLECT PAYMENT" in slips[0].lines
    assert any(isinstance(e, Beep) for e in eff)
    # a sale in between does not make the alert go away
    st, _ = run(st, *keys("100", "OK"), KeyPressed("CANCEL"))
    st, eff = run(st, PrintFinished(True, job="refused"))
    assert st.phase == Phase.IDLE
    st, eff = run(st, KeyPressed("CANCEL"))  # clears the "sale cancelled" notice first
    assert "OFFLINE SALE REFUSED" in shown(eff)
    st, eff = run(st, LinkChanged("UP"))
    assert "OFFLINE SALE REFUSED" in shown(eff)
    st, eff = run(st, KeyPressed("CANCEL"))
    assert "OFFLINE SALE REFUSED" not in shown(eff) and "ENTER AMOUNT" in shown(eff)


def test_refused_advice_during_a_sale_does_not_end_its_printing() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, _ = run(st, OfflineDecided(record(SaleStatus.OFFLINE_APPROVED, "", approval="Y30007")))
    assert st.phase == Phase.PRINTING
    st, eff = run(st, AdviceRefused(record(SaleStatus.OFFLINE_REFUSED, "05")))
    assert not any(isinstance(e, Show) for e in eff)  # the sale's screen stays
    st, _ = run(st, PrintFinished(True, job="refused"))
    assert st.phase == Phase.PRINTING  # only the sale's own receipt ends PRINTING
    st, _ = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT


def test_menu_says_what_it_printed() -> None:
    st, _ = initial(CFG, last=record(SaleStatus.APPROVED))
    st, _ = run(st, KeyPressed("F1"), KeyPressed("4"))
    st, eff = run(st, PrintFinished(True, job="report"))
    assert "REPORT PRINTED" in shown(eff) and "REPRINTED" not in shown(eff)
    st, eff = run(st, KeyPressed("2"))
    assert any(isinstance(e, Print) and e.job == "copy" for e in eff)
    st, eff = run(st, PrintFinished(True, job="copy"))
    assert "COPY PRINTED" in shown(eff)
    st, eff = run(st, KeyPressed("4"), PrintFinished(False, "PAPER OUT", job="report"))
    assert "PAPER OUT" in shown(eff)


def test_status_screen_in_words() -> None:
    st, _ = initial(CFG)
    stats = QueueStats(count=4, total=4500, oldest=T0 - timedelta(minutes=3))
    st, _ = run(st, LinkChanged("DOWN"), QueueChanged(stats), KeyPressed("F1"))
    st, eff = run(st, KeyPressed("3"))
    assert shown(eff) == "BANK OFFLINE | UNSENT SALES 4 | AMOUNT EUR 45.00 | OLDEST 3 MIN AGO"
    stats = QueueStats(count=0, total=0, oldest=T0 - timedelta(hours=30))
    st, eff = run(st, KeyPressed("OK"), LinkChanged("UP"), QueueChanged(stats), KeyPressed("3"))
    assert "BANK ONLINE" in shown(eff) and "OLDEST 30 H AGO" in shown(eff)
    st, eff = run(st, KeyPressed("OK"), QueueChanged(QueueStats()), KeyPressed("3"))
    assert "NOTHING TO SEND" in shown(eff)


def test_top_row_flags_are_words() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, LinkChanged("DEGRADED"))
    assert shown(eff).startswith("POSTERM    BANK SLOW")
    st, eff = run(st, LinkChanged("DOWN"))
    assert shown(eff).startswith("POSTERM      OFFLINE")
    st, eff = run(st, LinkChanged("DOWN", untrusted=True))
    assert "HOST NOT TRUSTED" in shown(eff)


def test_untrusted_host_is_not_retried_and_goes_to_the_offline_rules() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, HostUntrusted(7, "certificate does not verify"))
    assert st.phase == Phase.AUTHORIZING and not any(isinstance(e, Show) for e in eff)
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert len(decide) == 1 and decide[0].sale_id == 7
    assert "HOST BUSY" not in shown(eff)
    refused = record(SaleStatus.FAILED, "", reason="OVER FLOOR LIMIT")
    st, eff = run(st, OfflineDecided(refused))
    # why not online first, then why not offline: the bank, not the amount, is the cause;
    # the money word takes the last row once the slip is out
    assert shown(eff).startswith("NOT COMPLETED | HOST NOT TRUSTED | OVER FLOOR LIMIT | "
                                 "PRINTING...")
    st, eff = run(st, PrintFinished(True))
    assert [e.rows for e in eff if isinstance(e, Show)][-1][1:] == (
        "HOST NOT TRUSTED", "OVER FLOOR LIMIT", "NOT CHARGED")


def test_offline_refusal_names_the_host_before_the_rule() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    for _ in range(3):
        st, eff = run(st, HostBusy(7, "91"))
        if st.phase == Phase.BUSY_WAIT:
            st, eff = run(st, TimerFired("phase", st.token))
    st, eff = run(st, OfflineDecided(record(SaleStatus.FAILED, "", reason="OVER FLOOR LIMIT")))
    rows = [e.rows for e in eff if isinstance(e, Show)][-1]
    assert rows[:3] == ("NOT COMPLETED", "HOST UNAVAILABLE", "OVER FLOOR LIMIT")
    st, eff = run(st, PrintFinished(True))
    assert [e.rows for e in eff if isinstance(e, Show)][-1][3] == "NOT CHARGED"


def test_link_down_sale_shows_no_intermediate_screen() -> None:
    st, _ = run(to_card_wait(), LinkChanged("DOWN"))
    st, eff = run(st, CardSwiped(CARD))
    assert not any(isinstance(e, Show) for e in eff)
    st, eff = run(st, OfflineDecided(record(SaleStatus.OFFLINE_APPROVED, "", approval="Y30007")))
    assert "APPROVED OFFLINE" in shown(eff)


def test_internal_error_before_anything_was_journaled_ends_as_not_charged() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, AttemptFailed(None, "TERMINAL ERROR"))
    assert st.phase == Phase.PRINTING
    assert shown(eff).startswith("NOT COMPLETED | TERMINAL ERROR | NOT CHARGED | PRINTING...")
    assert any(isinstance(e, Print) and e.sale_id is None for e in eff)
    st, eff = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT and st.last is None


def test_every_screen_fits_the_display_and_its_character_set() -> None:
    """Walk many event sequences; every row must be ASCII and at most 20 characters."""
    events = [*keys("1250"), KeyPressed("OK"), KeyPressed("CANCEL"), KeyPressed("F1"),
              KeyPressed("3"), KeyPressed("4"), KeyPressed("2"), CardSwiped(CARD),
              HostBusy(7, "91"), HostUntrusted(7, "x"), LinkChanged("DOWN"),
              LinkChanged("DEGRADED", untrusted=True), PrintFinished(False, "PAPER OUT"),
              AdviceRefused(replace(record(SaleStatus.OFFLINE_REFUSED, "05"), amount=99999999)),
              OfflineDecided(record(SaleStatus.FAILED, "", reason="OFFLINE COUNT FULL")),
              QueueChanged(QueueStats(count=20, total=50000, oldest=T0 - timedelta(days=3),
                                      refused=12))]
    st0, _ = initial(replace(CFG, max_amount=10**11))
    for combo in itertools.product(events, repeat=3):
        st = st0
        for ev in [*keys("9", "OK"), *combo]:
            st, eff = run(st, ev)
            for e in eff:
                if isinstance(e, Show):
                    for row in e.rows:
                        assert len(row) <= 20 and row.isascii(), (combo, e.rows)
            if isinstance(ev, CardSwiped) and any(isinstance(e, Authorize) for e in eff):
                continue


def test_every_merchant_screen_fits_the_display_and_its_character_set() -> None:
    """The same walk through the merchant's functions (PIN, refund, void, reports, close),
    with the widest values: six-digit invoices and batches, large amounts, long texts."""
    big = replace(record(SaleStatus.APPROVED), amount=99999999999, invoice=999999,
                  batch=999999, pan_hash="ab" * 32)
    refund = replace(big, kind="refund", approval="")
    events = [KeyPressed("F1"), *[KeyPressed(k) for k in "56789"], *keys("1234"),
              KeyPressed("OK"), KeyPressed("CANCEL"), KeyPressed("CLEAR"),
              *[PinChecked(True, f) for f in ("refund", "void", "close", "x_report")],
              PinChecked(False, "void", "LOCKED FOR 120 MIN"),
              VoidCandidate(big), VoidCandidate(refund),
              VoidCandidate(None, "CANNOT BE VOIDED"), VoidRecorded(big, False),
              CloseProgress("UPLOADING 999 OF 999"), CloseDue(),
              CloseFinished(True, 999999, balanced=False),
              CloseFinished(False, 999999, message="REVERSALS PENDING"),
              PrintFinished(False, "PRINTER BUSY", job="z-report"),
              PrintFinished(True, job="void"), CardSwiped(CARD, "ab" * 32),
              HostAnswered(replace(refund, status=SaleStatus.NOT_COMPLETED)),
              TimerFired("phase", 0)]
    st0, _ = initial(replace(CFG, max_amount=10**11, pin_set=True), recent=[big])
    starts = [run(st0, *prefix)[0] for prefix in (
        [KeyPressed("F1")],
        [KeyPressed("F1"), KeyPressed("6"), *keys("1234", "OK")],
        [KeyPressed("F1"), KeyPressed("5"), *keys("1234", "OK"), PinChecked(True, "refund")],
        [KeyPressed("F1"), KeyPressed("8"), *keys("1234", "OK")],
        [KeyPressed("F1"), KeyPressed("6"), *keys("1234", "OK"), PinChecked(True, "void"),
         KeyPressed("OK")],
        [*keys("99999999999", "OK")],
        [CloseDue()])]
    seen = set()
    for start, depth in zip(starts, (3, 2, 2, 2, 3, 2, 2), strict=True):
        for combo in itertools.product(events, repeat=depth):
            st = start
            for ev in combo:
                if isinstance(ev, TimerFired):
                    ev = TimerFired("phase", st.token)
                st, eff = run(st, ev)
                seen.add(st.phase)
                for e in eff:
                    if isinstance(e, Show):
                        for row in e.rows:  # HD44780 ROM A00: a backslash is a yen sign, ~ an arrow
                            assert len(row) <= 20 and row.isascii(), (combo, e.rows)
                            assert row.isprintable() and not set(row) & set("\\~"), e.rows
    merchant = set(Phase) - {Phase.BUSY_WAIT, Phase.PRINTING, Phase.RESULT,  # walked above
                             # the chip's screens: tests/test_core_chip.py
                             Phase.CHIP_READING, Phase.CHIP_CHOOSE, Phase.CHIP_COMPLETING,
                             Phase.REMOVE_CARD, Phase.PIN_ENTRY}
    assert merchant - seen == set()  # the walk reached every screen of the merchant's


def test_bad_reads_do_not_hold_the_sale_past_the_card_timeout() -> None:
    st = to_card_wait()
    token = st.token
    for _ in range(5):  # a reader sending noise with line ends
        st, eff = run(st, CardReadFailed("CARD NOT READ", "line noise"))
        assert "CARD NOT READ" in shown(eff)
    st, eff = run(st, TimerFired("phase", token))  # the timer started for the card
    assert st.phase == Phase.IDLE and "NO CARD - CANCELLED" in shown(eff)


def _sale_screens(*events: object, link: str = "UP") -> list[tuple[str, ...]]:
    """Every screen of a sale of 12.50 from its first digit to idle, with a battery gauge and
    a modem's path in the top row."""
    from firmware.core.events import BatteryRead, PathChanged

    st, _ = initial(CFG)
    st, _ = run(st, BatteryRead(64), PathChanged("ETH"), LinkChanged(link))
    idle = st
    st, eff = run(st, *keys("1250", "OK"), CardSwiped(CARD), *events)
    screens = [e.rows for e in eff if isinstance(e, Show)]
    st, eff = run(st, PrintFinished(True))
    screens += [e.rows for e in eff if isinstance(e, Show)]
    st, eff = run(st, KeyPressed("OK"))
    screens += [e.rows for e in eff if isinstance(e, Show)]
    assert st.phase == Phase.IDLE
    from firmware.core.screens import show
    return [show(idle).rows, *screens]


def test_each_outcome_keeps_the_amount_the_top_row_and_the_battery_in_place() -> None:
    """The layout that keeps the display's traffic down (bench/display.py): the amount in
    one row and the same columns from the last digit to the result, the idle screen's top
    row until the outcome takes it, the battery level in its cells, idle back as it was."""
    outcomes = {
        "APPROVED": (HostAnswered(record(SaleStatus.APPROVED, "00", approval="123456")),),
        "DECLINED": (HostAnswered(record(SaleStatus.DECLINED, "05")),),
        "NOT COMPLETED": (OfflineDecided(record(SaleStatus.FAILED, "",
                                                reason="OVER FLOOR LIMIT")),),
        "APPROVED OFFLINE": (OfflineDecided(
            record(SaleStatus.OFFLINE_APPROVED, "", approval="Y30007")),),
    }
    for word, events in outcomes.items():
        screens = _sale_screens(*events, link="DOWN" if "OFFLINE" in word else "UP")
        idle, sale = screens[0], screens[1:-1]
        assert screens[-1][0] == idle[0] and screens[-1][2:] == idle[2:], (word, screens)
        keyed = next(i for i, s in enumerate(sale) if s[1].endswith("EUR 12.50"))
        assert all(s[1] == "SALE       EUR 12.50" for s in sale[keyed:]
                   if s[0] != "NOT COMPLETED"), (word, screens)  # it says why instead
        assert all(s[3].endswith("BAT 64%") for s in sale if "PRINTING" in s[3]
                   or s[3].startswith(("OK=", "CANCEL", "PLEASE"))), (word, screens)
        results = [s for s in sale if s[0] == word]
        assert results and all(s[0] == idle[0] for s in sale[:sale.index(results[0])]), \
            (word, screens)
