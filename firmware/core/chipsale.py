"""The chip part of a sale: the card inserted, read by the EMV kernel, and its last word.

Theory of operation
-------------------
The kernel (`firmware/core/emv/`) runs in the runtime, APDU by APDU; the core sees
only what a person or the money needs:

    WAIT_CARD --ChipInserted--> CHIP_READING (ChipBegin)   PLEASE WAIT / DO NOT REMOVE
    CHIP_READING --ChipAsked--> CHIP_CHOOSE --digit--> CHIP_READING (ChipChoice)
    CHIP_READING --ChipRead--> the sale's own AUTHORIZING (or DUPLICATE, or unreachable)
    AUTHORIZING --answer / unknown / busy--> CHIP_COMPLETING (ChipComplete: chipdone.py)
    CHIP_COMPLETING --ChipFinished--> ChipSettle (host approved) or the result
    CHIP_COMPLETING --ChipSettled / OfflineDecided--> PRINTING ... RESULT
    CHIP_COMPLETING --AttemptFailed / SaleClosed (no offline decision)--> NOT COMPLETED
    CHIP_READING --ChipFinished (TC at the first GENERATE AC)--> offline approval Y1
    CHIP_READING --ChipFinished (fallback)--> WAIT_CARD, a swipe now entry 80
    RESULT --timer/key, card still in--> REMOVE_CARD --ChipRemoved--> IDLE

Money (host-interface 8.1): APPROVED only with the host's 00 and the card's TC, and
only once the journal holds the card's decision (ChipSettle -> ChipSettled); a card
that declines a sale the host approved gets a reversal (06) journaled before DECLINED
BY CARD shows; a host that does not answer means the card is asked for an AAC and the
sale is reversed (68), never approved offline; with the host unreachable the card
decides with Y3/Z3 within the terminal's offline rules, and a TC is an offline approval
Y3 like a swipe's; a TC at the first GENERATE AC is Y1.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core import chipdone
from firmware.core.effects import Beep, ChipChoice, ChipSettle, ChipStop, DecideOffline
from firmware.core.effects import Log
from firmware.core.emv.steps import Outcome
from firmware.core.events import (
    AttemptFailed, ChipAsked, ChipFinished, ChipInserted, ChipRead, ChipRemoved, ChipSettled,
    Event, KeyPressed, OfflineDecided, SaleClosed, TimerFired,
)
from firmware.core.model import SaleRecord, SaleRequest, SaleStatus
from firmware.core.moves import go, refresh, to_idle
from firmware.core.risk import chip_offline
from firmware.core.dupguard import duplicate
from firmware.core.sale import REMIND_SECONDS, _finish, _send, ended
from firmware.core.state import Now, Phase, SaleFlow, State, Step


def _flow(state: State) -> SaleFlow:
    flow = state.flow
    assert isinstance(flow, SaleFlow), f"{state.phase.value} without a sale flow"
    return flow


# -- WAIT_CARD -----------------------------------------------------------------

def _inserted(state: State, event: Event, now: Now) -> Step:
    flow = _flow(state)
    if state.cfg.chip is None:
        return state, [Log("debug", "ChipInserted ignored in WAIT_CARD: no [chip] reader")]
    if flow.fallback:  # the chip failed already: the swipe is what is asked for
        return refresh(state, "CHIP FAILED: SWIPE")
    return chipdone.start(state, now)


# -- CHIP_READING, CHIP_CHOOSE -------------------------------------------------------

def _asked(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, ChipAsked)
    return go(state, Phase.CHIP_CHOOSE, state.cfg.card_timeout,
              flow=replace(_flow(state), labels=event.labels), message="")


def _choose_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    labels = _flow(state).labels
    if event.key == "CANCEL":
        st, eff = go(state, Phase.CHIP_READING, None, message="")
        return st, [*eff, ChipChoice(None)]
    if event.key.isdigit() and 1 <= int(event.key) <= len(labels):
        st, eff = go(state, Phase.CHIP_READING, None, message="")
        return st, [*eff, Log("info", f"cardholder chose {labels[int(event.key) - 1]}"),
                    ChipChoice(int(event.key) - 1)]
    return state, [Log("debug", f"key {event.key} ignored in CHIP_CHOOSE")]


def _choose_removed(state: State, event: Event, now: Now) -> Step:
    """The card left while the cardholder was to choose: nothing was sent; the kernel,
    waiting for the choice, is stopped at once rather than at the card timer."""
    st, eff = ended(state, "CARD REMOVED")
    return st, [ChipStop(), Beep(), *eff]


def _choose_timeout(state: State, event: Event, now: Now) -> Step:
    st, eff = go(state, Phase.CHIP_READING, None, message="")
    return st, [*eff, ChipChoice(None)]


def _reading_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL":  # nothing is with the host yet: the card is let go
        st, eff = ended(state, "SALE CANCELLED")
        return st, [ChipStop(), *eff]
    return state, [Log("debug", f"key {event.key} ignored in {state.phase.value}")]


def _read(state: State, event: Event, now: Now) -> Step:
    """The card asks to go online: the sale's request is built from the chip's data."""
    assert isinstance(event, ChipRead)
    flow = _flow(state)
    sale = flow.sale
    assert sale is not None
    chip = event.chip
    request = SaleRequest(kind=sale.kind, amount=sale.amount, card=chip.card,
                          local=now.local, entry="05", chip=chip, pin=flow.pin_online)
    sale = replace(sale, pan_hash=event.pan_hash)
    st = replace(state, flow=replace(flow, sale=sale, chip=chip))
    if duplicate(st, sale, now):
        st, eff = go(st, Phase.DUPLICATE, state.cfg.card_timeout,
                     flow=replace(_flow(st), sale=replace(sale, request=request)), message="")
        return st, [Log("warning", f"possible duplicate: card {chip.card.masked}, same "
                                   "amount as a recent approval; asking the operator"),
                    Beep(), *eff]
    return _send(st, chip.card, now, request)


def first_word(state: State, event: Event, now: Now) -> Step:
    """The kernel ended before any online step: a TC or an AAC at the first GENERATE
    AC, or no cryptogram at all (the chip failed, the card refused, cancelled)."""
    assert isinstance(event, ChipFinished)
    out = event.outcome
    flow = _flow(state)
    sale = flow.sale
    assert sale is not None
    log = _log(out)
    if out.chip is not None and out.decision in ("approved", "declined"):
        chip = out.chip
        request = SaleRequest(kind=sale.kind, amount=sale.amount, card=chip.card,
                              local=now.local, entry="05", chip=chip)
        approved = out.decision == "approved"
        reason = "APPROVED BY CARD" if approved else "DECLINED BY CARD"
        if approved:  # the terminal's own offline rules bind a Y1 too: the kernel only
            # asks for it through the action codes, which a configuration may not tie to
            # them (riskmgmt.py: an exceeded floor limit), so the rules are asked again
            rules = chip_offline(state.cfg.offline, state.queue, kind=sale.kind,
                                 amount=sale.amount, now=now.local)
            if not rules.approved:
                approved, reason = False, rules.reason
        st, eff = go(state, Phase.CHIP_COMPLETING, None, message="", flow=replace(
            flow, sale=replace(sale, request=request), chip=chip))
        return st, [log, *eff, DecideOffline(request, None, approved, reason, code="Y1")]
    terminal = state.cfg.chip
    if out.decision == "fallback" and terminal is not None and terminal.fallback:
        st, eff = go(state, Phase.WAIT_CARD, state.cfg.card_timeout, message="CHIP FAILED: SWIPE",
                     flow=replace(flow, fallback=True))
        return st, [log, Beep(), *eff]
    st, eff = ended(state, out.message or "CARD ERROR")
    return st, [log, Beep(), *eff]


def _log(out: Outcome) -> Log:
    level = "info" if out.decision in ("approved", "declined") else "warning"
    text = f"chip: {out.decision}"
    if out.message:
        text += f" ({out.message})"
    if out.detail:
        text += f": {out.detail}"
    return Log(level, f"{text}; {out.apdus} APDUs")


# -- CHIP_COMPLETING ------------------------------------------------------------------

def _last_word(state: State, event: Event, now: Now) -> Step:
    """The card's decision after the online step (Book 3 10.9, host-interface 8.1)."""
    assert isinstance(event, ChipFinished)
    out = event.outcome
    flow = _flow(state)
    sale = flow.sale
    assert sale is not None and sale.request is not None
    chip = out.chip or flow.chip
    if flow.offline is not None:  # the host could not be reached: Y3 or Z3
        allowed, reason = flow.offline
        approved = allowed and out.decision == "approved"
        request = replace(sale.request, chip=chip)
        why = reason if not allowed else ("WITHIN OFFLINE LIMITS" if approved
                                          else "DECLINED BY CARD")
        st = replace(state, flow=replace(flow, sale=replace(sale, request=request),
                                         offline=None, chip=chip))
        return st, [_log(out), DecideOffline(request, sale.sale_id, approved, why)]
    rec = flow.waiting
    assert rec is not None
    if rec.status == SaleStatus.APPROVED and rec.kind == "purchase":
        return replace(state, flow=replace(flow, chip=chip)), [
            _log(out), ChipSettle(rec.sale_id, out)]
    st, eff = _finish(state, rec)
    return st, [_log(out), *eff]


def _settled(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, ChipSettled | OfflineDecided)
    return _finish(state, event.record)


def _not_decided(state: State, event: Event, now: Now) -> Step:
    """The offline decision (Y1, Y3) could not be journaled: DecideOffline's fallback
    (decisions.offline_failed). The sale ends as the journal holds it, never approved:
    CHIP_COMPLETING has no timer and refuses CANCEL, so nothing else would end it."""
    assert isinstance(event, AttemptFailed | SaleClosed)
    if isinstance(event, SaleClosed):
        return _finish(state, event.record)
    sale = _flow(state).sale
    assert sale is not None and sale.request is not None
    request = sale.request
    record = SaleRecord(sale_id=0, kind=request.kind, amount=request.amount,
                        pan_masked=request.card.masked, local=request.local,
                        status=SaleStatus.FAILED, reason=event.reason)
    st, eff = _finish(state, record)
    return replace(st, last=state.last), eff  # not the journal's: the last sale stays


def _completing_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL":  # never while the card and the host are being settled
        return refresh(state, "PLEASE WAIT")
    return state, [Log("debug", f"key {event.key} ignored in CHIP_COMPLETING")]


# -- REMOVE_CARD ------------------------------------------------------------------------

def _removed(state: State, event: Event, now: Now) -> Step:
    return to_idle(state, state.message)


def _remind(state: State, event: Event, now: Now) -> Step:
    st, eff = go(state, Phase.REMOVE_CARD, REMIND_SECONDS)
    return st, [Beep(), *eff]


def _remove_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    return state, [Log("debug", f"key {event.key} ignored in REMOVE_CARD: the card is in")]


ROWS = {
    (Phase.WAIT_CARD, ChipInserted): _inserted,
    (Phase.CHIP_READING, ChipAsked): _asked,
    (Phase.CHIP_READING, ChipRead): _read,
    (Phase.CHIP_READING, ChipFinished): first_word,
    (Phase.CHIP_READING, KeyPressed): _reading_key,
    (Phase.CHIP_CHOOSE, KeyPressed): _choose_key,
    (Phase.CHIP_CHOOSE, TimerFired): _choose_timeout,
    (Phase.CHIP_CHOOSE, ChipFinished): first_word,
    (Phase.CHIP_CHOOSE, ChipRemoved): _choose_removed,
    (Phase.CHIP_COMPLETING, ChipFinished): _last_word,
    (Phase.CHIP_COMPLETING, ChipSettled): _settled,
    (Phase.CHIP_COMPLETING, OfflineDecided): _settled,
    (Phase.CHIP_COMPLETING, AttemptFailed): _not_decided,
    (Phase.CHIP_COMPLETING, SaleClosed): _not_decided,
    (Phase.CHIP_COMPLETING, KeyPressed): _completing_key,
    (Phase.REMOVE_CARD, ChipRemoved): _removed,
    (Phase.REMOVE_CARD, TimerFired): _remind,
    (Phase.REMOVE_CARD, KeyPressed): _remove_key,
}
