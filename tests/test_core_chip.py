"""A chip sale in the pure core (firmware/core/chipsale.py, chipdone.py): what the display
shows, what the core asks of the card and the host, and the money rules of
host-interface 8.1, event by event."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware.core.card import CardData
from firmware.core.effects import (
    Authorize, Beep, ChipBegin, ChipChoice, ChipComplete, ChipSettle, ChipStop, DecideOffline,
    Print, Show, StartTimer,
)
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import ChipData, HostReply, Outcome
from firmware.core.events import (
    CardSwiped, ChipAsked, ChipFinished, ChipInserted, ChipRead, ChipRemoved, ChipSettled,
    HostAnswered, HostBusy, HostOutcomeUnknown, KeyPressed, LinkChanged, OfflineDecided,
    PrintFinished, TimerFired,
)
from firmware.core.machine import Phase, State, initial
from firmware.core.model import SaleStatus
from firmware.core.receipt import sale_receipt
from firmware.core.texts import CARD_DECLINED
from tests.test_core_sale import CFG, keys, now, record, run, shown

CHIP_CFG = replace(CFG, chip=Terminal())
CARD = CardData(pan="4761739001010218", expiry="3012", service_code="201",
                track2="4761739001010218=30122010000000000000")
ARQC = ChipData(card=CARD, psn="01", aid="F0000000011010", label="TEST CREDIT",
                field55=bytes.fromhex("9F2608CA00FC75213186669F270180"), cid=0x80,
                cryptogram="CA00FC7521318666", atc="0001", tvr="0000008000", tsi="E800")
TC = replace(ARQC, cid=0x40, cryptogram="1122334455667788")
AAC = replace(ARQC, cid=0x00, cryptogram="8877665544332211")


def inserted(cfg: object = CHIP_CFG, amount: str = "1250") -> tuple[State, list[object]]:
    st, _ = initial(cfg)  # type: ignore[arg-type]
    return run(st, *keys(amount, "OK"), ChipInserted("3B6E"))


def online(link: str = "UP") -> tuple[State, list[object]]:
    st, _ = inserted()
    if link != "UP":
        st, _ = run(st, LinkChanged(link))
    return run(st, ChipRead(ARQC, pan_hash="h"))


def test_inserted_card_starts_the_kernel_with_do_not_remove_on_screen() -> None:
    st, eff = inserted()
    assert st.phase == Phase.CHIP_READING and st.chip_in
    begin = [e for e in eff if isinstance(e, ChipBegin)]
    assert begin == [ChipBegin("purchase", 1250, now().local, True)]
    assert "PLEASE WAIT" in shown(eff) and "DO NOT REMOVE CARD" in shown(eff)


def test_wait_card_says_swipe_or_insert_with_a_chip_reader() -> None:
    st, _ = initial(CHIP_CFG)
    _, eff = run(st, *keys("1250", "OK"))
    assert "SWIPE OR INSERT CARD" in shown(eff)
    st, _ = initial(CFG)
    _, eff = run(st, *keys("1250", "OK"))
    assert "SWIPE CARD" in shown(eff) and "INSERT" not in shown(eff)


def test_a_swiped_chip_card_is_asked_for_its_chip() -> None:
    """host-interface 8.1: no 90x for a service code 2xx/6xx with a chip reader."""
    st, _ = initial(CHIP_CFG)
    st, eff = run(st, *keys("1250", "OK"), CardSwiped(CARD))
    assert st.phase == Phase.WAIT_CARD and "INSERT CARD" in shown(eff)
    assert not any(isinstance(e, Authorize | DecideOffline) for e in eff)


def test_fallback_after_the_chip_failed_takes_the_swipe_as_entry_80() -> None:
    st, _ = inserted()
    st, eff = run(st, ChipFinished(Outcome("fallback", message="CHIP ERROR")))
    assert st.phase == Phase.WAIT_CARD and "CHIP FAILED: SWIPE" in shown(eff)
    st, eff = run(st, ChipRemoved(), CardSwiped(CARD))
    auth = [e for e in eff if isinstance(e, Authorize)]
    assert len(auth) == 1 and auth[0].request.entry == "80"


def test_no_fallback_when_the_configuration_forbids_it() -> None:
    st, _ = inserted(replace(CFG, chip=Terminal(fallback=False)))
    st, eff = run(st, ChipFinished(Outcome("fallback", message="CHIP ERROR")))
    assert st.phase == Phase.REMOVE_CARD and "CHIP ERROR" in shown(eff)


def test_the_cardholder_chooses_the_application_on_the_display() -> None:
    """EMV Book 1 12.4: several applications, the cardholder picks one."""
    st, _ = inserted()
    st, eff = run(st, ChipAsked(("TEST CREDIT", "TEST DEBIT")))
    assert st.phase == Phase.CHIP_CHOOSE
    assert "1 TEST CREDIT" in shown(eff) and "2 TEST DEBIT" in shown(eff)
    st2, eff = run(st, KeyPressed("3"))
    assert st2.phase == Phase.CHIP_CHOOSE and not any(isinstance(e, ChipChoice) for e in eff)
    st2, eff = run(st, KeyPressed("2"))
    assert st2.phase == Phase.CHIP_READING and ChipChoice(1) in eff
    st2, eff = run(st, KeyPressed("CANCEL"))
    assert ChipChoice(None) in eff


def test_approved_only_with_the_hosts_00_and_the_cards_tc_once_journaled() -> None:
    st, eff = online()
    auth = [e for e in eff if isinstance(e, Authorize)]
    assert len(auth) == 1 and auth[0].request.entry == "05" and auth[0].request.chip == ARQC
    approved = record(SaleStatus.APPROVED)
    st, eff = run(st, HostAnswered(approved, icc="910A8F42F33023B584543030"))
    assert st.phase == Phase.CHIP_COMPLETING and "DO NOT REMOVE CARD" in shown(eff)
    complete = [e for e in eff if isinstance(e, ChipComplete)]
    assert complete == [ChipComplete(HostReply("answered", "00", bytes.fromhex(
        "910A8F42F33023B584543030")))]
    assert not any(isinstance(e, Print) for e in eff)  # nothing shown before the card
    st, eff = run(st, ChipFinished(Outcome("approved", "second", chip=TC)))
    settle = [e for e in eff if isinstance(e, ChipSettle)]
    assert len(settle) == 1 and settle[0].sale_id == approved.sale_id
    assert "APPROVED" not in shown(eff)
    st, eff = run(st, ChipSettled(approved))
    assert st.phase == Phase.PRINTING and "APPROVED" in shown(eff)


def test_a_card_that_declines_after_the_approval_is_declined_by_card() -> None:
    st, _ = online()
    approved = record(SaleStatus.APPROVED)
    st, _ = run(st, HostAnswered(approved))
    st, eff = run(st, ChipFinished(Outcome("declined", "second", chip=AAC)))
    assert [e for e in eff if isinstance(e, ChipSettle)], "the reversal is journaled first"
    declined = replace(approved, status=SaleStatus.DECLINED, reason=CARD_DECLINED)
    st, eff = run(st, ChipSettled(declined))
    assert CARD_DECLINED in shown(eff) and "NOT CHARGED" in shown(eff)
    lines = [e for e in eff if isinstance(e, Print)][0].lines
    assert any(CARD_DECLINED in line for line in lines)


def test_a_host_decline_ends_with_the_cards_aac_and_no_settle() -> None:
    st, _ = online()
    declined = record(SaleStatus.DECLINED, code="05")
    st, eff = run(st, HostAnswered(declined))
    assert ChipComplete(HostReply("answered", "05")) in eff
    st, eff = run(st, ChipFinished(Outcome("declined", "second", chip=AAC)))
    assert not any(isinstance(e, ChipSettle) for e in eff)
    assert st.phase == Phase.PRINTING and "DECLINED" in shown(eff)


def test_an_unknown_outcome_asks_the_card_for_an_aac_and_is_never_approved() -> None:
    st, _ = online()
    unknown = record(SaleStatus.NOT_COMPLETED, code="")
    st, eff = run(st, HostOutcomeUnknown(unknown, "timeout"))
    assert ChipComplete(HostReply("unknown")) in eff
    st, eff = run(st, ChipFinished(Outcome("approved", "second", chip=TC)))  # a wrong card
    assert not any(isinstance(e, ChipSettle | DecideOffline) for e in eff)
    assert "NO RESPONSE" in shown(eff)


@pytest.mark.parametrize("card_says,approved", [("approved", True), ("declined", False)])
def test_host_unreachable_lets_the_card_decide_y3_within_the_offline_rules(
        card_says: str, approved: bool) -> None:
    st, eff = online(link="DOWN")
    complete = [e for e in eff if isinstance(e, ChipComplete)]
    assert complete == [ChipComplete(HostReply("unreachable", offline_ok=True))]
    assert not any(isinstance(e, Authorize) for e in eff)
    st, eff = run(st, ChipFinished(Outcome(card_says, "second",
                                           chip=TC if approved else AAC)))
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert len(decide) == 1 and decide[0].approved is approved and decide[0].code == "Y3"
    assert decide[0].request.chip == (TC if approved else AAC)


def test_busy_through_the_retries_lets_the_card_decide() -> None:
    st, _ = online()
    st, eff = run(st, HostBusy(7, "91"), mono=100.0)  # past the sale's budget
    assert ChipComplete(HostReply("unreachable", offline_ok=True)) in eff


def test_a_refund_never_goes_offline_with_a_chip() -> None:
    st, _ = initial(CHIP_CFG)
    st, _ = run(st, LinkChanged("DOWN"))
    st = replace(st, flow=None)
    from firmware.core.sale import begin
    st, _ = begin(st, "refund")
    st, eff = run(st, *keys("1250", "OK"), ChipInserted())
    assert [e for e in eff if isinstance(e, ChipBegin)][0].offline_ok is False
    st, eff = run(st, ChipRead(ARQC))
    assert ChipComplete(HostReply("unreachable", offline_ok=False)) in eff


def test_tc_at_the_first_generate_ac_is_an_offline_approval_y1() -> None:
    st, _ = inserted()
    st, eff = run(st, ChipFinished(Outcome("approved", "first", chip=TC)))
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert len(decide) == 1 and decide[0].approved and decide[0].code == "Y1"
    assert decide[0].request.entry == "05" and decide[0].request.chip == TC
    rec = record(SaleStatus.OFFLINE_APPROVED, approval="Y10007")
    st, eff = run(st, OfflineDecided(rec))
    assert st.phase == Phase.PRINTING and "APPROVED OFFLINE" in shown(eff)


def test_remove_card_at_the_end_and_a_reminder_while_it_stays() -> None:
    st, _ = online()
    approved = record(SaleStatus.APPROVED)
    st, _ = run(st, HostAnswered(approved), ChipFinished(Outcome("approved", "second", chip=TC)),
                ChipSettled(approved))
    st, eff = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT and "REMOVE CARD" in shown(eff)
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.REMOVE_CARD and "REMOVE CARD" in shown(eff)
    assert Beep() in eff and any(isinstance(e, StartTimer) for e in eff)
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.REMOVE_CARD and Beep() in eff
    st, eff = run(st, ChipRemoved())
    assert st.phase == Phase.IDLE and not st.chip_in


def test_cancel_while_reading_lets_the_card_go() -> None:
    st, _ = inserted()
    st, eff = run(st, KeyPressed("CANCEL"))
    assert ChipStop() in eff and st.phase == Phase.REMOVE_CARD


def test_terminated_card_ends_without_journal_or_host() -> None:
    st, _ = inserted()
    st, eff = run(st, ChipFinished(Outcome("terminated", message="NOT ACCEPTED")))
    assert st.phase == Phase.REMOVE_CARD and "NOT ACCEPTED" in shown(eff)
    assert not any(isinstance(e, Authorize | DecideOffline) for e in eff)


def test_chip_receipt_shows_the_emv_data_and_a_signature_line() -> None:
    rec = replace(record(SaleStatus.APPROVED), entry="CHIP", emv=(
        ("AID", "F0000000011010"), ("APP", "TEST CREDIT"), ("TVR", "0000008000"),
        ("TSI", "E800"), ("TC", "1122334455667788"), ("CVM", "SIGNATURE")))
    lines = sale_receipt(CHIP_CFG, rec)
    text = "\n".join(lines)
    for word in ("CHIP", "F0000000011010", "TEST CREDIT", "0000008000", "E800",
                 "1122334455667788", "SIGNATURE"):
        assert word in text
    assert all(len(line.lstrip("\x1b")) <= 40 for line in lines)


def test_every_chip_screen_fits_the_display() -> None:
    long = ("A" * 16, "B" * 16, "C" * 16, "D" * 16)
    st, _ = inserted()
    for events in ([ChipAsked(long)], [ChipRead(ARQC), HostAnswered(record(SaleStatus.APPROVED))],
                   [ChipFinished(Outcome("terminated", message="X" * 20))]):
        _, eff = run(st, *events)
        for e in eff:
            if isinstance(e, Show):
                assert all(len(row) <= 20 and row.isascii() for row in e.rows), e.rows




def test_a_card_already_in_the_reader_is_read_once_the_amount_is_confirmed() -> None:
    st, _ = initial(CHIP_CFG)
    st, _ = run(st, ChipInserted("3B6E"))  # left in, or inserted before the amount
    assert st.phase == Phase.IDLE and st.chip_in
    st, eff = run(st, *keys("1250", "OK"))
    assert st.phase == Phase.CHIP_READING
    assert [e for e in eff if isinstance(e, ChipBegin)] == [
        ChipBegin("purchase", 1250, now().local, True)]
