"""A chip sale's money rules where the core, the runtime and the journal meet
(host-interface 4 and 8.1): what is journaled before the screen says it, what the
reversal, the advice, the void and the batch upload carry in fields 23 and 55, and
that no failure leaves a chip sale waiting for ever in CHIP_COMPLETING."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sqlite3
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from firmware.core import iso
from firmware.core.iso import MessageError
from firmware.core.card import CardData
from firmware.core.effects import (
    Authorize, ChipComplete, ChipSettle, ChipStop, DecideOffline, Print,
)
from firmware.core.emv import tlv
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import ChipData, HostReply, Outcome
from firmware.core.events import (
    AttemptFailed, ChipAsked, ChipFinished, ChipInserted, ChipRead, ChipRemoved, ChipSettled,
    Event, HostAnswered, HostBusy, KeyPressed, OfflineDecided, PrintFinished, SaleClosed,
    TimerFired,
)
from firmware.core.machine import Phase
from firmware.core.model import SaleRecord, SaleRequest, SaleStatus
from firmware.core.risk import OfflineRules, QueueStats
from firmware.runtime.authorizer import request_fields
from firmware.runtime.chip import ChipSession
from firmware.runtime.decisions import Decisions
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Answer, Kind
from firmware.runtime.vault import Vault
from tests.test_core_chip import CHIP_CFG, inserted, online
from tests.test_core_sale import keys, record, run, shown

IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
PAN = "4761739001010218"
CARD = CardData(pan=PAN, expiry="3012", service_code="201",
                track2=f"{PAN}=30122010000000000000")
LOCAL = datetime(2026, 12, 7, 12, 0, 0)


def chip(cid: int, cryptogram: str, atc: str = "0001", extra: bytes = b"") -> ChipData:
    """A chip's data with a field 55 as the kernel builds it (host-interface 8.1)."""
    f55 = tlv.encode_all([
        (0x9F26, bytes.fromhex(cryptogram)), (0x9F27, bytes([cid])),
        (0x9F10, bytes.fromhex("06010A03A00000")), (0x9F37, bytes.fromhex("11223344")),
        (0x9F36, bytes.fromhex(atc)), (0x95, bytes.fromhex("0000008000")),
        (0x9A, bytes.fromhex("261207")), (0x9C, b"\x00"),
        (0x9F02, bytes.fromhex("000000001250")), (0x9F03, bytes(6)),
        (0x5F2A, bytes.fromhex("0978")), (0x82, bytes.fromhex("3900")),
        (0x9F1A, bytes.fromhex("0276")), (0x9F34, bytes.fromhex("1F0302")),
        (0x9F33, bytes.fromhex("E0F8C8")), (0x9F35, b"\x22"),
        (0x84, bytes.fromhex("F0000000011010")), (0x5F34, b"\x01")]) + extra
    return ChipData(card=CARD, psn="01", aid="F0000000011010", label="TEST CREDIT",
                    field55=f55, cid=cid, cryptogram=cryptogram, atc=atc,
                    tvr="0000008000", tsi="E800", cvm="PIN VERIFIED")


ARQC = chip(0x80, "CA00FC7521318666")
TC = chip(0x40, "1122334455667788")
AAC = chip(0x00, "8877665544332211")


def request(c: ChipData, kind: str = "purchase") -> SaleRequest:
    return SaleRequest(kind=kind, amount=1250, card=CARD, local=LOCAL, entry="05", chip=c)


class World:
    """The journal and the core's direct writes (decisions.py), with the events they emit."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.journal = Journal(tmp / "j.sqlite3", Vault.open(tmp / "k", create=True))
        self.events: list[Event] = []
        self.decisions = Decisions(self.journal, IDENT, emit=self.events.append,
                                   queue_changed=lambda: None, kick=lambda: None)

    def attempt(self, c: ChipData, sale_id: int | None = None) -> Any:
        req = request(c)
        fields = request_fields(IDENT, req, iso.PURCHASE, False)
        attempt, _ = self.journal.start_attempt(
            sale_id, fields=fields, card=CARD, kind="purchase", amount=1250, currency="978",
            local=LOCAL, f7="1207110000", chip=c)
        return attempt

    def host_approved(self) -> SaleRecord:
        att = self.attempt(ARQC)
        return self.journal.record_answer(att, code="00", approval="123456",
                                          rrn="000000000001")

    def public_fields(self) -> list[str]:
        return [r[0] for r in self.journal.db.execute("SELECT fields FROM sales")]

    def close(self) -> None:
        self.journal.close()


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Any:
    w = World(tmp_path)
    yield w
    w.close()


def tags(icc_hex: str) -> list[tuple[int, str]]:
    return [(t.tag, t.value.hex().upper()) for t in tlv.parse(bytes.fromhex(icc_hex))]


# -- APPROVED only with the card's TC journaled ------------------------------------------

def test_the_tc_is_journaled_before_approved_shows(world: World) -> None:
    rec = world.host_approved()
    assert world.journal.chip_awaiting() == [rec.sale_id]
    world.decisions.settle_chip(ChipSettle(rec.sale_id, Outcome("approved", "second", chip=TC)))
    settled, = world.events
    assert isinstance(settled, ChipSettled) and settled.record.status == SaleStatus.APPROVED
    row = json.loads(world.journal.db.execute("SELECT chip FROM sales").fetchone()[0])
    assert row["state"] == "settled" and row["ac"] == "TC"
    assert row["cryptogram"] == TC.cryptogram
    assert world.journal.chip_awaiting() == []


@pytest.mark.parametrize("outcome", [
    Outcome("approved", "second", chip=ARQC),  # a card that says approved without a TC
    Outcome("declined", "second", chip=AAC),
    Outcome("failed", "second", message="CARD REMOVED"),
])
def test_no_tc_no_approval_and_a_reversal_06(world: World, outcome: Outcome) -> None:
    rec = world.host_approved()
    world.decisions.settle_chip(ChipSettle(rec.sale_id, outcome))
    settled, = world.events
    assert isinstance(settled, ChipSettled) and settled.record.status == SaleStatus.DECLINED
    revs = world.journal.pending(Kind.REVERSAL)
    assert [r.reason for r in revs] == ["06"]


# -- field 55 of the reversals -----------------------------------------------------------

def test_a_reversal_after_the_cards_decline_carries_exactly_its_aacs_three_tags(
        world: World) -> None:
    """host-interface 4, 0400: only 9F26, 9F27 (an AAC) and 9F36, each once."""
    rec = world.host_approved()
    world.decisions.settle_chip(ChipSettle(rec.sale_id, Outcome("declined", "second",
                                                                chip=AAC)))
    rev, = world.journal.pending(Kind.REVERSAL)
    doc = rev.message(77, "1207110100")
    assert doc["39"] == "06" and doc["23"] == "001"
    assert tags(doc["55"]) == [(0x9F26, AAC.cryptogram), (0x9F27, "00"), (0x9F36, "0001")]
    assert "35" not in doc
    iso.encode(doc)


def test_the_crash_recovery_reversal_carries_no_field_55(world: World) -> None:
    rec = world.host_approved()
    recovery = world.journal.recover()  # stopped before the card's word
    assert [r.sale_id for r in recovery.reversed] == [rec.sale_id]
    assert world.journal.sale(rec.sale_id).status == SaleStatus.NOT_COMPLETED
    rev, = world.journal.pending(Kind.REVERSAL)
    doc = rev.message(77, "1207110100")
    assert doc["39"] == "06" and "55" not in doc


def test_a_reversal_68_of_a_chip_sale_carries_no_field_55(world: World) -> None:
    att = world.attempt(ARQC)
    world.journal.attempt_unknown(att, "68")
    rev, = world.journal.pending(Kind.REVERSAL)
    doc = rev.message(77, "1207110100")
    assert doc["39"] == "68" and "55" not in doc and doc["22"] == "052"


# -- the advices (0220) --------------------------------------------------------------------

def _advice_icc(world: World) -> list[tuple[int, str]]:
    adv, = world.journal.pending(Kind.ADVICE)
    doc = adv.message(88, "1207110200")
    iso.encode(doc)
    return tags(doc["55"])


def test_busy_then_y3_advice_carries_the_tc_not_the_arqc(world: World) -> None:
    att = world.attempt(ARQC)
    world.journal.attempt_busy(att, "91")  # busy through the retries
    world.decisions.decide_offline(DecideOffline(request(TC), att.sale_id, True,
                                                 "WITHIN OFFLINE LIMITS"))
    decided, = world.events
    assert isinstance(decided, OfflineDecided)
    assert decided.record.approval.startswith("Y3")
    icc = dict(_advice_icc(world))
    assert icc[0x9F26] == TC.cryptogram and icc[0x9F27] == "40"
    assert all('"55"' not in f for f in world.public_fields())


def test_host_down_y3_and_card_y1_advices_carry_the_tc(world: World) -> None:
    world.decisions.decide_offline(DecideOffline(request(TC), None, True, "APPROVED BY CARD",
                                                 code="Y1"))
    decided, = world.events
    assert isinstance(decided, OfflineDecided) and decided.record.approval.startswith("Y1")
    icc = dict(_advice_icc(world))
    assert icc[0x9F26] == TC.cryptogram and icc[0x9F27] == "40"
    assert all('"55"' not in f for f in world.public_fields())


# -- the void and the batch upload -------------------------------------------------------

def test_a_void_of_a_chip_sale_sends_no_23_and_no_55(world: World) -> None:
    rec = world.host_approved()
    world.decisions.settle_chip(ChipSettle(rec.sale_id, Outcome("approved", "second", chip=TC)))
    result = world.journal.record_void(rec.sale_id)
    assert result.record is not None and result.sent_to_host
    void, = world.journal.pending(Kind.VOID)
    doc = void.message(99, "1207110300")
    assert doc["39"] == "17"
    assert not {"2", "14", "23", "35", "55"} & doc.keys()


def test_the_0320_of_y1_and_y3_sales_carries_their_tc(world: World) -> None:
    world.decisions.decide_offline(DecideOffline(request(TC), None, True, "APPROVED BY CARD",
                                                 code="Y1"))
    att = world.attempt(ARQC)
    world.journal.attempt_busy(att, "91")
    tc2 = chip(0x40, "A1A2A3A4A5A6A7A8", atc="0002")
    world.decisions.decide_offline(DecideOffline(request(tc2), att.sale_id, True,
                                                 "WITHIN OFFLINE LIMITS"))
    advices = world.journal.pending(Kind.ADVICE)
    world.journal.identities([a.key for a in advices], "1207110400")
    world.journal.record_answers([Answer(a.key, "00", final=True) for a in advices])
    close = world.journal.begin_close(scheduled=False, now=LOCAL)
    assert close is not None
    world.journal.close_out_of_balance(close.batch)
    items = world.journal.upload_items(close.batch)
    assert len(items) == 2
    for item, want in zip(items, (TC, tc2), strict=True):
        doc = item.message(100, "1207110500")
        iso.encode(doc)
        got = dict(tags(doc["55"]))
        assert set(got) <= {0x9F26, 0x9F27, 0x9F36, 0x95, 0x9B, 0x9F5B}
        assert got[0x9F26] == want.cryptogram and got[0x9F27] == "40"
        assert doc["90"][:4] == "0220" and "2" not in doc


def test_field_55_is_never_in_clear_in_the_sales_fields(world: World) -> None:
    world.host_approved()
    world.decisions.decide_offline(DecideOffline(request(TC), None, True, "APPROVED BY CARD",
                                                 code="Y1"))
    world.journal.db.commit()
    for fields in world.public_fields():
        assert not {"2", "14", "35", "55"} & json.loads(fields).keys()
    raw = sqlite3.connect(world.journal.path).execute(
        "SELECT fields || chip FROM sales").fetchall()
    assert all(ARQC.field55.hex().upper() not in r[0] and PAN not in r[0] for r in raw)


# -- no hang in CHIP_COMPLETING --------------------------------------------------------------

def test_an_offline_decision_that_cannot_be_made_ends_a_y1_chip_sale() -> None:
    """DecideOffline failing (its runner's fallback: AttemptFailed, decisions.offline_failed)
    must end the sale: CHIP_COMPLETING has no timer and refuses CANCEL."""
    st, _ = inserted()
    st, eff = run(st, ChipFinished(Outcome("approved", "first", chip=TC)))
    assert st.phase == Phase.CHIP_COMPLETING and any(isinstance(e, DecideOffline) for e in eff)
    st, eff = run(st, AttemptFailed(None, "TERMINAL ERROR"))
    assert st.phase == Phase.PRINTING, "the sale waits for ever in CHIP_COMPLETING"
    assert "NOT COMPLETED" in shown(eff) and "APPROVED" not in shown(eff)
    assert [e for e in eff if isinstance(e, Print)]


def test_an_offline_decision_that_cannot_be_made_ends_a_busy_chip_sale() -> None:
    st, _ = online()
    st, eff = run(st, HostBusy(7, "91"), mono=100.0)
    assert st.phase == Phase.CHIP_COMPLETING and any(isinstance(e, ChipComplete) for e in eff)
    st, eff = run(st, ChipFinished(Outcome("approved", "second", chip=TC)))
    assert any(isinstance(e, DecideOffline) for e in eff)
    closed = record(SaleStatus.FAILED, code="", reason="TERMINAL ERROR", approval="")
    st, eff = run(st, SaleClosed(closed))
    assert st.phase == Phase.PRINTING, "the sale waits for ever in CHIP_COMPLETING"
    assert "NOT COMPLETED" in shown(eff) and "APPROVED" not in shown(eff)


def test_a_field_55_the_host_messages_cannot_carry_fails_the_offline_decision(
        world: World) -> None:
    """What makes DecideOffline fail on a hostile card: a field 55 over 255 bytes (a long
    9F10 in a format 2 answer) cannot be built, and nothing is journaled."""
    long_iad = tlv.encode(0x9F10, bytes(200))
    big = replace(TC, field55=TC.field55 + long_iad)
    with pytest.raises(MessageError):
        world.decisions.decide_offline(DecideOffline(request(big), None, True, "APPROVED BY "
                                                     "CARD", code="Y1"))
    assert world.events == [] and world.public_fields() == []
    event = world.decisions.offline_failed(DecideOffline(request(big), None, True, "X"))
    assert isinstance(event, AttemptFailed)


class _Reader:
    def power_on(self) -> bytes:
        return b"\x3b\x00"

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        return b"", 0x6A82

    def power_off(self) -> None:
        pass


def test_a_chip_complete_with_no_kernel_running_still_ends_the_sale() -> None:
    """The core in CHIP_COMPLETING waits for exactly one ChipFinished: a ChipComplete that
    finds no kernel (it ended or was stopped) must not be dropped in silence."""
    events: list[Event] = []

    async def scenario() -> None:
        session = ChipSession(_Reader(), Terminal(), emit=events.append,  # type: ignore[arg-type]
                              pan_hash=lambda pan: "h", sequence=lambda: 1,
                              spawn=lambda coro, name: asyncio.ensure_future(coro))
        try:
            session.complete(ChipComplete(HostReply("answered", "00")))
        finally:
            session.close()

    asyncio.run(scenario())
    finished = [e for e in events if isinstance(e, ChipFinished)]
    assert len(finished) == 1 and finished[0].outcome.decision == "failed"


# -- the kernel let go when the sale ends without the card -------------------------------

def _duplicate() -> Any:
    """A chip sale read (ChipRead) with the same card and amount as a recent approval."""
    st, _ = online()
    st, _ = run(st, HostAnswered(record(SaleStatus.APPROVED, pan_hash="h")),
                ChipFinished(Outcome("approved", "second", chip=TC)),
                ChipSettled(record(SaleStatus.APPROVED, pan_hash="h")),
                PrintFinished(True), KeyPressed("OK"), ChipRemoved())
    assert st.phase == Phase.IDLE and st.recent
    st, _ = run(st, *keys("1250", "OK"), ChipInserted("3B6E"), ChipRead(ARQC, pan_hash="h"))
    assert st.phase == Phase.DUPLICATE
    return st


@pytest.mark.parametrize("event", [KeyPressed("CANCEL"), "timer"])
def test_a_duplicate_refused_stops_the_kernel_waiting_at_its_online_step(event: Any) -> None:
    st = _duplicate()
    ev = TimerFired("duplicate", st.token) if event == "timer" else event
    st, eff = run(st, ev)
    assert ChipStop() in eff, "the kernel waits for ever for the host's answer"
    assert not any(isinstance(e, Authorize | DecideOffline) for e in eff)
    assert st.phase == Phase.REMOVE_CARD and "SALE CANCELLED" in shown(eff)


def test_a_card_removed_while_choosing_ends_at_once() -> None:
    st, _ = inserted()
    st, _ = run(st, ChipAsked(("TEST CREDIT", "TEST DEBIT")))
    st, eff = run(st, ChipRemoved())
    assert ChipStop() in eff
    assert st.phase == Phase.IDLE and "CARD REMOVED" in shown(eff)


def test_a_cancel_that_overtakes_the_kernels_online_request_sends_nothing() -> None:
    """ChipStop in CHIP_READING while the kernel's ChipRead is already queued: the late
    ChipRead is ignored, so no request reaches the host for a sale the screen ended."""
    st, _ = inserted()
    st, eff = run(st, KeyPressed("CANCEL"))
    assert ChipStop() in eff and st.phase == Phase.REMOVE_CARD
    st, eff = run(st, ChipRead(ARQC, pan_hash="h"))
    assert not any(isinstance(e, Authorize | DecideOffline | ChipComplete) for e in eff)
    assert st.phase == Phase.REMOVE_CARD


def test_cancel_while_busy_closes_the_sale_and_the_card_gives_an_aac() -> None:
    st, _ = online()
    st, _ = run(st, HostBusy(7, "91"))
    assert st.phase == Phase.BUSY_WAIT
    st, eff = run(st, KeyPressed("CANCEL"))
    closed = record(SaleStatus.FAILED, code="", reason="SALE CANCELLED", approval="")
    st, eff = run(st, SaleClosed(closed))
    assert ChipComplete(HostReply("unknown")) in eff and st.phase == Phase.CHIP_COMPLETING
    st, eff = run(st, ChipFinished(Outcome("declined", "second", chip=AAC)))
    assert not any(isinstance(e, ChipSettle | DecideOffline) for e in eff)
    assert "NOT COMPLETED" in shown(eff) and "APPROVED" not in shown(eff)


@pytest.mark.parametrize("rules,queue", [
    (OfflineRules(enabled=False), QueueStats()),
    (OfflineRules(), QueueStats(count=20, total=100)),  # the queue is full
])
def test_a_tc_at_the_first_generate_ac_still_obeys_the_terminals_offline_rules(
        rules: OfflineRules, queue: QueueStats) -> None:
    """The kernel asks for a TC only through the action codes: with action codes that do
    not send an exceeded floor limit online, a card may answer a TC although the terminal's
    offline rules (offline off, the queue full) allow no offline approval. No Y1 then."""
    st, _ = inserted(replace(CHIP_CFG, offline=rules))
    st = replace(st, queue=queue)
    st, eff = run(st, ChipFinished(Outcome("approved", "first", chip=TC)))
    decide, = (e for e in eff if isinstance(e, DecideOffline))
    assert decide.approved is False and decide.code == "Y1"
